"""Render a UV-textured mesh over a background (DreamGaussian's stage 2), through `MeshRasterizer`:
nvdiffrast on CUDA, pure torch elsewhere. Silhouettes are antialiased, so vertex offsets get
gradients from the mask too."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from framework.cameras.camera import CameraBatch
from framework.renderers.mesh_raster import MeshRasterizer, clip_positions
from framework.representations.textured_mesh import TexturedMesh


class TexturedMeshRenderer(nn.Module):
    """Args:
    backend: "auto", "torch" or "cuda" (see `MeshRasterizer`).
    """

    def __init__(self, backend: str = "auto") -> None:
        super().__init__()
        self.rasterizer = MeshRasterizer(backend)

    def forward(self, mesh: TexturedMesh, background: nn.Module, cameras: CameraBatch, training: bool) -> dict[str, Tensor]:
        """rgb [B, H, W, 3] over the background, opacity and depth [B, H, W, 1]."""
        faces = mesh.faces
        pos_clip = clip_positions(mesh.positions(), cameras)
        rast = self.rasterizer.rasterize(pos_clip, faces, (cameras.height, cameras.width))
        uv = self.rasterizer.interpolate(mesh.uv, rast, faces)
        # Our UVs start at the texture's bottom-left (OBJ); the rasterizer's v = 0 is row 0.
        uv = torch.stack([uv[..., 0], 1.0 - uv[..., 1]], dim=-1)
        albedo = self.rasterizer.texture(mesh.albedo()[None], uv, boundary_mode="clamp")
        coverage = (rast[..., 3:] > 0).to(albedo.dtype)
        _, directions = cameras.rays()
        rgb = albedo * coverage + (1.0 - coverage) * background(directions, training)
        depth = self.rasterizer.interpolate(pos_clip[..., 3:], rast, faces)
        blended = self.rasterizer.antialias(torch.cat([rgb, coverage], dim=-1), rast, pos_clip, faces)
        return {"rgb": blended[..., :3], "opacity": blended[..., 3:], "depth": depth}
