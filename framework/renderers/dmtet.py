"""Render a DMTet: mesh its SDF (the faces change every step), rasterise, shade the surface.

The same rasterizer as the textured mesh (nvdiffrast on CUDA, pure torch elsewhere). Colour,
normal map and coverage are antialiased together, so silhouettes give the SDF and the deformation
gradients in every image a guidance sees. Only covered pixels query the colour field and the
material. `info` carries the mesh and the grid's SDF for the mesh regularisers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framework.cameras.camera import CameraBatch
from framework.renderers.depth_map import depth_map
from framework.renderers.mesh_raster import MeshRasterizer, clip_positions, vertex_normals
from framework.renderers.normal_map import normal_map
from framework.representations.dmtet import DMTet
from framework.representations.materials import Shading


class DMTetRenderer(nn.Module):
    """Args:
    backend: "auto", "torch" or "cuda" (see `MeshRasterizer`).
    """

    def __init__(self, backend: str = "auto") -> None:
        super().__init__()
        self.rasterizer = MeshRasterizer(backend)

    def update(self, dmtet: DMTet, step: int) -> None:
        """Nothing to refresh per step: the mesh is made in every forward."""

    def forward(self, dmtet: DMTet, material: nn.Module, background: nn.Module, cameras: CameraBatch, shading: Shading, training: bool) -> dict:
        """rgb and normal_map [B, H, W, 3] over the background (normal map: over white), opacity
        and depth [B, H, W, 1], the covered pixels' world normal and albedo [B, H, W, 3] (zero
        elsewhere), the images a prior of other domains sees (RichDreamer's): depth_map [B, H, W,
        1] (`framework.renderers.depth_map`) and albedo_map [B, H, W, 3] (the albedo over white),
        and `info` (the mesh's vertices and faces, the grid's SDF and edges)."""
        vertices, faces, sdf = dmtet.surface_with_sdf()
        pos_clip = clip_positions(vertices, cameras)
        rast = self.rasterizer.rasterize(pos_clip, faces, (cameras.height, cameras.width))
        points = self.rasterizer.interpolate(vertices, rast, faces)
        normals = F.normalize(self.rasterizer.interpolate(vertex_normals(vertices, faces), rast, faces), dim=-1)
        coverage = (rast[..., 3:] > 0).to(points.dtype)
        _, directions = cameras.rays()
        B, H, W = coverage.shape[:3]
        covered = coverage.reshape(-1).nonzero(as_tuple=True)[0]
        image_index = covered // (H * W)
        flat_points, flat_normals = points.reshape(-1, 3)[covered], normals.reshape(-1, 3)[covered]
        flat_directions = directions.reshape(-1, 3)[covered]
        if hasattr(material, "textures"):  # a texture-field material (PBR) gives the albedo too
            textures = material.textures(flat_points)
            surface_albedo = textures["albedo"]
            colour = material.shade_textures(textures, flat_normals, flat_directions)
        else:
            surface_albedo = dmtet.albedo(flat_points)
            colour = material.shade(surface_albedo, flat_normals, flat_points, flat_directions, shading, image_index)
        albedo = _scatter(surface_albedo, covered, B, H, W)
        rgb = _scatter(colour, covered, B, H, W) + (1.0 - coverage) * background(directions, training)
        depth = self.rasterizer.interpolate(pos_clip[..., 3:], rast, faces)
        stacked = torch.cat([rgb, normal_map(normals, coverage, cameras), coverage, depth_map(depth, coverage, cameras), albedo + (1.0 - coverage)], dim=-1)
        blended = self.rasterizer.antialias(stacked, rast, pos_clip, faces)
        return {
            "rgb": blended[..., :3],
            "normal_map": blended[..., 3:6],
            "opacity": blended[..., 6:7],
            "depth_map": blended[..., 7:8],
            "albedo_map": blended[..., 8:11],
            "depth": depth,
            "normal": normals * coverage,
            "albedo": albedo,
            "info": {"vertices": vertices, "faces": faces, "sdf": sdf, "edges": dmtet.edges, "initial_sdf": dmtet.initial_sdf},
        }


def _scatter(values: Tensor, covered: Tensor, batch: int, height: int, width: int) -> Tensor:
    """[B, H, W, C] with `values` [N, C] at the flat pixel indices `covered`, zero elsewhere."""
    out = values.new_zeros(batch * height * width, values.shape[-1])
    return out.index_copy(0, covered, values).view(batch, height, width, -1)
