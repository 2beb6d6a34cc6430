"""Mesh files: GLB and OBJ writers for exports, and a reader back into our z-up world.

Both formats are written +Y up (through `framework.export.axes`): glTF requires it, and the DCC
tools people open OBJ files in (Blender, Maya, MeshLab) assume it too, so one frame serves both.
Every file is written atomically; an OBJ bundle writes its texture and material library before
the OBJ that references them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import trimesh
from PIL import Image

from framework.export.axes import yup_to_zup, zup_to_yup
from framework.utils.atomic import atomic_path

UNLIT = "KHR_materials_unlit"


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


def _mesh(
    vertices: np.ndarray,
    faces: np.ndarray,
    vertex_colors: np.ndarray | None,
    texture: Texture | None,
    material: Callable[[Image.Image], trimesh.visual.material.Material],
) -> trimesh.Trimesh:
    """A +Y-up trimesh from z-up arrays, carrying vertex colours or `texture` in `material(image)`."""
    if vertex_colors is not None and texture is not None:
        raise ValueError("give vertex_colors or texture, not both")
    visual = None
    if vertex_colors is not None:
        rgb = np.round(np.clip(vertex_colors, 0.0, 1.0) * 255)
        rgba = np.concatenate([rgb, np.full((len(rgb), 1), 255)], axis=1).astype(np.uint8)
        visual = trimesh.visual.ColorVisuals(vertex_colors=rgba)
    elif texture is not None:
        visual = trimesh.visual.TextureVisuals(uv=texture.uv, material=material(Image.fromarray(texture.image)))
    return trimesh.Trimesh(zup_to_yup(np.asarray(vertices)), faces, visual=visual, process=False)


def _glb_material(image: Image.Image) -> trimesh.visual.material.Material:
    """Matte: glTF's default metallicFactor is 1, which renders a texture dark."""
    return trimesh.visual.material.PBRMaterial(baseColorTexture=image, metallicFactor=0.0, roughnessFactor=1.0)


def _obj_material(image: Image.Image, name: str) -> trimesh.visual.material.Material:
    """White diffuse, no specular: trimesh's default grey Kd would tint the texture. `name`
    names the texture file."""
    return trimesh.visual.material.SimpleMaterial(name=name, image=image, diffuse=(255, 255, 255, 255), specular=(0, 0, 0, 255))


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
    """
    mesh = _mesh(vertices, faces, vertex_colors, texture, _glb_material)

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
) -> None:
    """Write a Wavefront OBJ, +Y up like our GLB files.

    A textured mesh also gets `<stem>.mtl` and `<texture_name>.png` beside `path`. Vertex colours
    go in the widely read `v x y z r g b` extension and need no material library, so an
    untextured mesh is the OBJ file alone.

    Args:
        path: the `.obj` file.
        vertices: [V, 3] float positions in our z-up world.
        faces: [F, 3] int vertex indices, counter-clockwise seen from outside.
        vertex_colors: [V, 3] float RGB in [0, 1], or None.
        texture: a UV-mapped texture instead of vertex colours, or None.
        texture_name: stem of the texture image (and name of its material); the OBJ's stem if None.
    """
    path = Path(path)
    material = partial(_obj_material, name=texture_name or path.stem)
    mesh = _mesh(vertices, faces, vertex_colors, texture, material)
    text, assets = trimesh.exchange.obj.export_obj(mesh, return_texture=True, mtl_name=f"{path.stem}.mtl")
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
