"""Render a UV-textured mesh over a background (DreamGaussian's stage 2), through `MeshRasterizer`:
nvdiffrast on CUDA, pure torch elsewhere. Silhouettes are antialiased, so vertex offsets get
gradients from the mask too. The texture is the albedo the material shades per pixel: unlit
(`DiffuseMaterial`) or under a configured light (`LitMaterial`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framework.cameras.camera import CameraBatch
from framework.renderers.mesh_raster import MeshRasterizer, clip_positions, face_normals, vertex_normals
from framework.representations.materials import Shading
from framework.representations.textured_mesh import TexturedMesh


def two_sided_normals(vertices: Tensor, faces: Tensor, rast: Tensor, cameras: CameraBatch, rasterizer: MeshRasterizer, points: Tensor | None = None) -> Tensor:
    """[B, H, W, 3] unit smooth (vertex) normals of rasterized pixels (`rast` from `rasterizer`),
    turned towards the camera where the pixel's face is seen from behind, so generated meshes with
    mixed windings do not shade dark. `points`: the pixels' surface points when already
    interpolated."""
    normals = F.normalize(rasterizer.interpolate(vertex_normals(vertices, faces), rast, faces), dim=-1)
    geometric = face_normals(vertices, faces)[(rast[..., 3].long() - 1).clamp(min=0)]  # [B, H, W, 3]
    points = rasterizer.interpolate(vertices, rast, faces) if points is None else points
    towards_camera = cameras.position[:, None, None, :] - points
    facing = torch.where((geometric * towards_camera).sum(-1, keepdim=True) < 0, -1.0, 1.0)
    return facing * normals


class TexturedMeshRenderer(nn.Module):
    """Args:
    backend: "auto", "torch" or "cuda" (see `MeshRasterizer`).
    """

    def __init__(self, backend: str = "auto") -> None:
        super().__init__()
        self.rasterizer = MeshRasterizer(backend)

    def update(self, mesh: TexturedMesh, step: int) -> None:
        """Nothing to refresh per step."""

    def forward(self, mesh: TexturedMesh, material: nn.Module, background: nn.Module, cameras: CameraBatch, shading: Shading, training: bool) -> dict[str, Tensor]:
        """rgb [B, H, W, 3] over the background, opacity and depth [B, H, W, 1], and the covered
        pixels' normal and albedo [B, H, W, 3] (zero elsewhere)."""
        faces, positions = mesh.faces, mesh.positions()
        pos_clip = clip_positions(positions, cameras)
        rast = self.rasterizer.rasterize(pos_clip, faces, (cameras.height, cameras.width))
        uv = self.rasterizer.interpolate(mesh.uv, rast, faces)
        # Our UVs start at the texture's bottom-left (OBJ); the rasterizer's v = 0 is row 0.
        uv = torch.stack([uv[..., 0], 1.0 - uv[..., 1]], dim=-1)
        albedo = self.rasterizer.texture(mesh.albedo()[None], uv, boundary_mode="clamp")
        _, directions = cameras.rays()
        points = self.rasterizer.interpolate(positions, rast, faces)
        normals = two_sided_normals(positions, faces, rast, cameras, self.rasterizer, points)
        B, H, W = albedo.shape[:3]
        image_index = torch.arange(B, device=albedo.device).repeat_interleave(H * W)
        colour = material.shade(albedo.reshape(-1, 3), normals.reshape(-1, 3), points.reshape(-1, 3), directions.reshape(-1, 3), shading, image_index).view(B, H, W, 3)
        coverage = (rast[..., 3:] > 0).to(colour.dtype)
        rgb = colour * coverage + (1.0 - coverage) * background(directions, training)
        depth = self.rasterizer.interpolate(pos_clip[..., 3:], rast, faces)
        blended = self.rasterizer.antialias(torch.cat([rgb, coverage], dim=-1), rast, pos_clip, faces)
        return {"rgb": blended[..., :3], "opacity": blended[..., 3:], "depth": depth, "normal": normals * coverage, "albedo": albedo * coverage}
