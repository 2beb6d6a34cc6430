"""Mesh files: GLB and OBJ writers for exports, and a reader back into our z-up world.

Both formats are written +Y up (through `framework.export.axes`): glTF requires it, and the DCC
tools people open OBJ files in (Blender, Maya, MeshLab) assume it too, so one frame serves both.
Every file is written atomically; an OBJ bundle writes its texture and material library before
the OBJ that references them.

A mesh carries vertex colours, a colour `Texture` (a matte material), or `PBRTextures` (glTF
metallic-roughness; in the MTL, the PBR extension's `map_Pr` / `map_Pm` / `norm`).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

from framework.export.axes import yup_to_zup, zup_to_yup
from framework.utils.atomic import atomic_path

UNLIT = "KHR_materials_unlit"

# The stem suffix of each PBR map's image in an OBJ bundle: `<name>_<suffix>.png`.
PBR_IMAGE_SUFFIXES = {"base_color": "basecolor", "roughness": "roughness", "metallic": "metallic", "normal": "normal"}
# The MTL statement naming each map (the PBR extension of MTL for roughness, metallic, normal).
_MTL_MAP_STATEMENTS = {"base_color": "map_Kd", "roughness": "map_Pr", "metallic": "map_Pm", "normal": "norm"}


@dataclass(frozen=True)
class Texture:
    """A colour texture mapped by per-vertex UVs (seams are split into separate vertices).

    Attributes:
        uv: [V, 2] float coordinates in [0, 1], origin at the image's bottom-left (the OBJ
            convention; trimesh flips v for glTF).
        image: [H, W, 3] uint8 RGB, row 0 at the top.
    """

    uv: np.ndarray
    image: np.ndarray


@dataclass(frozen=True)
class PBRTextures:
    """glTF metallic-roughness maps sharing one UV layout (seams split into separate vertices).

    Attributes:
        uv: [V, 2] float coordinates in [0, 1], origin at the images' bottom-left (as `Texture`).
        base_color: [H, W, 3] uint8 RGB, row 0 at the top.
        roughness: [H, W] uint8, 255 = fully rough.
        metallic: [H, W] uint8, 255 = metal.
        normal: [H, W, 3] uint8 tangent-space normal map ((n + 1) / 2, +Y green), or None.
    """

    uv: np.ndarray
    base_color: np.ndarray
    roughness: np.ndarray
    metallic: np.ndarray
    normal: np.ndarray | None = None

    def __post_init__(self) -> None:
        size = self.base_color.shape[:2]
        for name, image in self.images().items():
            if image.shape[:2] != size:
                raise ValueError(f"PBRTextures {name} is {image.shape[0]}x{image.shape[1]}, base_color {size[0]}x{size[1]}")

    def images(self) -> dict[str, np.ndarray]:
        """Each map by name (`PBR_IMAGE_SUFFIXES`' keys), the normal map only when given."""
        images = {"base_color": self.base_color, "roughness": self.roughness, "metallic": self.metallic}
        if self.normal is not None:
            images["normal"] = self.normal
        return images

    def metallic_roughness(self) -> np.ndarray:
        """[H, W, 3] uint8 packed as glTF reads it: roughness in G, metallic in B. R (occlusion in
        the common ORM packing) is 255, unoccluded, for tools that read it."""
        return np.stack([np.full_like(self.roughness, 255), self.roughness, self.metallic], axis=-1)


def _check_one_appearance(vertex_colors: np.ndarray | None, texture: Texture | None, pbr: PBRTextures | None) -> None:
    """A mesh is coloured one way: by vertex colours, a colour texture or PBR maps."""
    given = [name for name, value in (("vertex_colors", vertex_colors), ("texture", texture), ("pbr", pbr)) if value is not None]
    if len(given) > 1:
        raise ValueError(f"give one of vertex_colors, texture and pbr, not both {given[0]} and {given[1]}")


def _mesh(
    vertices: np.ndarray,
    faces: np.ndarray,
    vertex_colors: np.ndarray | None = None,
    uv: np.ndarray | None = None,
    material: trimesh.visual.material.Material | None = None,
) -> trimesh.Trimesh:
    """A +Y-up trimesh from z-up arrays, carrying vertex colours or `material` mapped by `uv`."""
    visual = None
    if vertex_colors is not None:
        rgb = np.round(np.clip(vertex_colors, 0.0, 1.0) * 255)
        rgba = np.concatenate([rgb, np.full((len(rgb), 1), 255)], axis=1).astype(np.uint8)
        visual = trimesh.visual.ColorVisuals(vertex_colors=rgba)
    elif material is not None:
        visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    return trimesh.Trimesh(zup_to_yup(np.asarray(vertices)), faces, visual=visual, process=False)


def _glb_material(image: Image.Image) -> trimesh.visual.material.Material:
    """Matte: glTF's default metallicFactor is 1, which renders a texture dark."""
    return trimesh.visual.material.PBRMaterial(baseColorTexture=image, metallicFactor=0.0, roughnessFactor=1.0)


def _pbr_material(pbr: PBRTextures) -> trimesh.visual.material.Material:
    """Factors of 1, so the maps' values are the material's values."""
    return trimesh.visual.material.PBRMaterial(
        baseColorTexture=Image.fromarray(pbr.base_color),
        metallicRoughnessTexture=Image.fromarray(pbr.metallic_roughness()),
        normalTexture=None if pbr.normal is None else Image.fromarray(pbr.normal),
        metallicFactor=1.0,
        roughnessFactor=1.0,
    )


def _obj_material(image: Image.Image | None, name: str) -> trimesh.visual.material.Material:
    """White diffuse, no specular: trimesh's default grey Kd would tint the texture. `name`
    names the texture file."""
    return trimesh.visual.material.SimpleMaterial(name=name, image=image, diffuse=(255, 255, 255, 255), specular=(0, 0, 0, 255))


def _pbr_obj_assets(pbr: PBRTextures, name: str, mtl_name: str) -> dict[str, bytes]:
    """The MTL (white Kd and no specular, as `_obj_material`; each map by its PBR-extension
    statement) and one PNG per map, by file name."""
    assets, lines = {}, [f"newmtl {name}", "Kd 1.00000000 1.00000000 1.00000000", "Ks 0.00000000 0.00000000 0.00000000"]
    for key, image in pbr.images().items():
        file_name = f"{name}_{PBR_IMAGE_SUFFIXES[key]}.png"
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        assets[file_name] = buffer.getvalue()
        lines.append(f"{_MTL_MAP_STATEMENTS[key]} {file_name}")
    assets[mtl_name] = ("\n".join(lines) + "\n").encode()
    return assets


def _matte_default_material(tree: dict) -> None:
    """Give material-less glTF primitives a matte white material.

    Without one, viewers use glTF's default material, which is fully metallic and renders
    vertex colours nearly black.
    """
    bare = [p for mesh in tree["meshes"] for p in mesh["primitives"] if "material" not in p]
    if bare:
        materials = tree.setdefault("materials", [])
        for primitive in bare:
            primitive["material"] = len(materials)
        materials.append({"name": "matte", "pbrMetallicRoughness": {"metallicFactor": 0.0, "roughnessFactor": 1.0}})


def _mark_unlit(tree: dict) -> None:
    """Flag every material KHR_materials_unlit: viewers show its colours without lighting."""
    for material in tree.get("materials", []):
        material.setdefault("extensions", {})[UNLIT] = {}
    used = tree.setdefault("extensionsUsed", [])
    if UNLIT not in used:
        used.append(UNLIT)


def write_glb(
    path: str | os.PathLike,
    vertices: np.ndarray,
    faces: np.ndarray,
    vertex_colors: np.ndarray | None = None,
    texture: Texture | None = None,
    unlit: bool = False,
    pbr: PBRTextures | None = None,
) -> None:
    """Write a binary glTF, +Y up, with smooth vertex normals.

    Args:
        path: the `.glb` file.
        vertices: [V, 3] float positions in our z-up world.
        faces: [F, 3] int vertex indices, counter-clockwise seen from outside.
        vertex_colors: [V, 3] float RGB in [0, 1], or None.
        texture: a UV-mapped texture instead of vertex colours, or None.
        unlit: the colours already hold their lighting (a texture baked from lit renders), so
            the material is marked KHR_materials_unlit and viewers do not light it again.
        pbr: metallic-roughness maps instead (baseColorTexture, metallicRoughnessTexture, and
            normalTexture when given; factors 1), or None.
    """
    _check_one_appearance(vertex_colors, texture, pbr)
    if texture is not None:
        mesh = _mesh(vertices, faces, uv=texture.uv, material=_glb_material(Image.fromarray(texture.image)))
    elif pbr is not None:
        mesh = _mesh(vertices, faces, uv=pbr.uv, material=_pbr_material(pbr))
    else:
        mesh = _mesh(vertices, faces, vertex_colors)

    def postprocess(tree: dict) -> None:
        _matte_default_material(tree)
        if unlit:
            _mark_unlit(tree)

    with atomic_path(path) as tmp:
        mesh.export(tmp, file_type="glb", include_normals=True, tree_postprocessor=postprocess)


def write_obj(
    path: str | os.PathLike,
    vertices: np.ndarray,
    faces: np.ndarray,
    vertex_colors: np.ndarray | None = None,
    texture: Texture | None = None,
    texture_name: str | None = None,
    pbr: PBRTextures | None = None,
) -> None:
    """Write a Wavefront OBJ, +Y up like our GLB files.

    A textured mesh also gets `<stem>.mtl` and `<texture_name>.png` beside `path`; a PBR one gets
    `<stem>.mtl` and `<texture_name>_<suffix>.png` per map. Vertex colours go in the widely read
    `v x y z r g b` extension and need no material library, so an untextured mesh is the OBJ file
    alone.

    Args:
        path: the `.obj` file.
        vertices: [V, 3] float positions in our z-up world.
        faces: [F, 3] int vertex indices, counter-clockwise seen from outside.
        vertex_colors: [V, 3] float RGB in [0, 1], or None.
        texture: a UV-mapped texture instead of vertex colours, or None.
        texture_name: stem of the texture image (and name of its material); the OBJ's stem if None.
            With `pbr`, the images are `<texture_name>_<suffix>.png` (`PBR_IMAGE_SUFFIXES`).
        pbr: metallic-roughness maps instead, or None.
    """
    path = Path(path)
    _check_one_appearance(vertex_colors, texture, pbr)
    material_name, mtl_name = texture_name or path.stem, f"{path.stem}.mtl"
    if pbr is not None:
        # trimesh writes the geometry, UVs and `usemtl`; its MTL writer knows no PBR maps, so the
        # material library and images are ours.
        mesh = _mesh(vertices, faces, uv=pbr.uv, material=_obj_material(None, material_name))
        text, _ = trimesh.exchange.obj.export_obj(mesh, return_texture=True, mtl_name=mtl_name)
        assets = _pbr_obj_assets(pbr, material_name, mtl_name)
    else:
        material = None if texture is None else _obj_material(Image.fromarray(texture.image), material_name)
        mesh = _mesh(vertices, faces, vertex_colors, None if texture is None else texture.uv, material)
        text, assets = trimesh.exchange.obj.export_obj(mesh, return_texture=True, mtl_name=mtl_name)
    # The material library and texture first, so the OBJ never references a missing file.
    for name, data in sorted(assets.items(), key=lambda item: item[0].endswith(".mtl")):
        with atomic_path(path.parent / name) as tmp:
            tmp.write_bytes(data)
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def load_mesh_zup(path: str | os.PathLike) -> trimesh.Trimesh:
    """Read a GLB or OBJ written +Y up back into our z-up world (for evaluation and tests).

    Vertex order, faces and UVs are kept as stored; per-vertex colours always come back as
    `mesh.visual.vertex_colors` ([V, 4] uint8), whichever way the file's loader holds them.

    Args:
        path: a `.glb` or `.obj` file.

    Returns:
        The mesh, vertices [V, 3] in our z-up world.
    """
    scene = trimesh.load(path, force="scene", process=False)
    for geometry in scene.geometry.values():
        visual = geometry.visual
        if isinstance(visual, trimesh.visual.TextureVisuals) and visual.uv is None and "color" in visual.vertex_attributes:
            # A GLB's matte material makes trimesh file its colours as a material attribute,
            # which concatenating the scene would drop.
            geometry.visual = trimesh.visual.ColorVisuals(geometry, vertex_colors=visual.vertex_attributes["color"])
    mesh = scene.to_mesh()
    mesh.vertices = yup_to_zup(mesh.vertices)
    return mesh
