"""Bake a material field (albedo, roughness, metallic at world points) into UV texture maps.

Fantasia3D's appearance stage ends with a PBR material defined at every point of space; viewers
want glTF metallic-roughness textures. `bake_field_textures` unwraps the surface with xatlas
(`unwrap_uv`), finds the surface point under every texel centre by rasterizing the UV layout,
evaluates the field there and fills the atlas's empty space from the nearest baked texel;
`write_pbr_mesh` writes the maps as `model.glb` and an OBJ bundle. Maps follow
`texture_bake`'s convention: row 0 at the top, uv origin at the bottom-left.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from framework.export.mesh_io import PBR_IMAGE_SUFFIXES, PBRTextures, write_glb, write_obj
from framework.export.texture_bake import _fill_from_nearest, unwrap_uv
from framework.renderers.mesh_raster import MeshRasterizer

# What a material's `textures(points)` returns, and the map each entry is baked into.
FIELD_TO_MAP = {"albedo": "base_color", "roughness": "roughness", "metallic": "metallic"}


@torch.no_grad()
def bake_field_textures(
    vertices: Tensor,
    faces: Tensor,
    textures_fn: Callable[[Tensor], dict[str, Tensor]],
    texture_size: int = 512,
    chunk_size: int = 65536,
    rasterizer: MeshRasterizer | None = None,
    fields: Mapping[str, str] = FIELD_TO_MAP,
) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """Unwrap a mesh and bake a PBR field into its texture maps.

    Args:
        vertices: [V, 3] world positions (detached here: a surface in training may carry grad).
        faces: [F, 3] vertex indices.
        textures_fn: maps points [N, 3] to `albedo` [N, 3], `roughness` [N, 1] and `metallic`
            [N, 1] in [0, 1] (e.g. `PBRMaterial.textures`).
        texture_size: T.
        chunk_size: points per `textures_fn` call, to bound its memory.
        rasterizer: rasterizes the UV layout; a default `MeshRasterizer()` if None.
        fields: which entries of `textures_fn`'s result are baked, and the map each becomes
            (`{"albedo": "base_color"}` bakes a colour field alone).

    Returns:
        vertices: [V', 3] the unwrapped mesh's vertices (seams split, see `unwrap_uv`).
        faces: [F, 3] long, the input faces in order, indexing the new vertices.
        uv: [V', 2] in [0, 1], origin at the maps' bottom-left.
        maps: `base_color` [T, T, 3], `roughness` [T, T, 1] and `metallic` [T, T, 1], float in
            [0, 1], row 0 at the top.
    """
    if faces.ndim != 2 or faces.shape[0] == 0 or faces.shape[1] != 3:
        raise ValueError(f"bake_field_textures needs faces [F > 0, 3], got shape {tuple(faces.shape)}")
    rasterizer = rasterizer or MeshRasterizer()
    vertices, faces, uv, _ = unwrap_uv(vertices.detach().float(), faces.long(), texture_size=texture_size)

    # Texel centres -> triangle and barycentrics in UV space -> surface points.
    uv_clip = torch.cat([uv * 2 - 1, torch.zeros_like(uv[:, :1]), torch.ones_like(uv[:, :1])], dim=-1)[None]
    uv_rast = rasterizer.rasterize(uv_clip, faces, (texture_size, texture_size))
    on_surface = uv_rast[0, ..., 3] > 0
    if not on_surface.any():
        raise ValueError(f"bake_field_textures: no texel centre falls on the mesh at texture_size={texture_size}")
    points = rasterizer.interpolate(vertices, uv_rast, faces)[0][on_surface]  # [N, 3]

    values: dict[str, list[Tensor]] = {name: [] for name in fields}
    for chunk in points.split(chunk_size):
        textures = textures_fn(chunk)
        missing = sorted(set(fields) - set(textures))
        if missing:
            raise ValueError(f"textures_fn returned no {missing} (keys: {sorted(textures)})")
        for name in fields:
            values[name].append(textures[name].float().reshape(chunk.shape[0], -1))

    maps = {}
    for name, map_name in fields.items():
        baked = torch.cat(values[name])
        texture = baked.new_zeros(texture_size, texture_size, baked.shape[1])
        texture[on_surface] = baked
        maps[map_name] = _fill_from_nearest(texture, on_surface).clamp(0.0, 1.0)
    return vertices, faces, uv, maps


def _to_uint8(image: Tensor) -> np.ndarray:
    """[H, W, C] float in [0, 1] -> uint8, rounding to the nearest level."""
    return (image.detach().clamp(0.0, 1.0) * 255).round().to(torch.uint8).cpu().numpy()


def write_pbr_mesh(export_dir: str | os.PathLike, vertices: Tensor, faces: Tensor, uv: Tensor, maps: dict[str, Tensor]) -> dict[str, Path]:
    """Write `model.glb` (glTF metallic-roughness, images embedded, +Y up) and `model.obj` +
    `model.mtl` + one PNG per map (`model_basecolor.png`, `model_roughness.png`,
    `model_metallic.png`, and `model_normal.png` with a normal map), each atomically.

    Args:
        export_dir: the run's `export/` folder.
        vertices: [V, 3] world positions (z up).
        faces: [F, 3] vertex indices, counter-clockwise seen from outside.
        uv: [V, 2] texture coordinates, origin at the maps' bottom-left.
        maps: `base_color` [T, T, 3], `roughness` [T, T, 1], `metallic` [T, T, 1] and optionally
            `normal` [T, T, 3] (tangent space, encoded as (n + 1) / 2), float in [0, 1], row 0 at
            the top (as from `bake_field_textures`).

    Returns:
        Paths under the keys "glb", "obj", "mtl" and the map names.
    """
    export_dir = Path(export_dir)
    normal = maps.get("normal")
    textures = PBRTextures(
        uv=uv.detach().cpu().numpy().astype(np.float64),
        base_color=_to_uint8(maps["base_color"]),
        roughness=_to_uint8(maps["roughness"])[..., 0],
        metallic=_to_uint8(maps["metallic"])[..., 0],
        normal=None if normal is None else _to_uint8(normal),
    )
    positions = vertices.detach().cpu().numpy().astype(np.float32)
    indices = faces.detach().cpu().numpy().astype(np.int64)
    paths = {"glb": export_dir / "model.glb", "obj": export_dir / "model.obj", "mtl": export_dir / "model.mtl"}
    paths.update({name: export_dir / f"model_{PBR_IMAGE_SUFFIXES[name]}.png" for name in textures.images()})
    write_obj(paths["obj"], positions, indices, pbr=textures)
    write_glb(paths["glb"], positions, indices, pbr=textures)
    return paths
