"""Render a UV-textured mesh over a background (DreamGaussian's stage 2), through `MeshRasterizer`:
nvdiffrast on CUDA, pure torch elsewhere. Silhouettes are antialiased, so vertex offsets get
gradients from the mask too. The texture is shown as is, or as an albedo lit by the bundled
world's camera light (`framework.world.render`), the light the bundled prior has seen."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framework.cameras.camera import CameraBatch
from framework.renderers.mesh_raster import MeshRasterizer, clip_positions, face_normals, vertex_normals
from framework.representations.textured_mesh import TexturedMesh
from framework.world.render import brightness, light_directions


def world_lit(albedo: Tensor, vertices: Tensor, faces: Tensor, rast: Tensor, cameras: CameraBatch, rasterizer: MeshRasterizer) -> Tensor:
    """Albedo [B, H, W, 3] of rasterized pixels (`rast` from `rasterizer`) shaded by the world's
    camera light, in [0, 1]. Normals are the smooth vertex normals; a face seen from behind is lit
    as if it faced the camera, so generated meshes with mixed windings do not turn dark."""
    normals = F.normalize(rasterizer.interpolate(vertex_normals(vertices, faces), rast, faces), dim=-1)
    geometric = face_normals(vertices, faces)[(rast[..., 3].long() - 1).clamp(min=0)]  # [B, H, W, 3]
    towards_camera = cameras.position[:, None, None, :] - rasterizer.interpolate(vertices, rast, faces)
    facing = torch.where((geometric * towards_camera).sum(-1, keepdim=True) < 0, -1.0, 1.0)
    light = light_directions(cameras)[:, None, None, :]
    return (albedo * brightness(facing * normals, light)).clamp(0.0, 1.0)


class TexturedMeshRenderer(nn.Module):
    """Args:
    backend: "auto", "torch" or "cuda" (see `MeshRasterizer`).
    """

    def __init__(self, backend: str = "auto") -> None:
        super().__init__()
        self.rasterizer = MeshRasterizer(backend)

    def forward(self, mesh: TexturedMesh, background: nn.Module, cameras: CameraBatch, training: bool, lit: bool = False) -> dict[str, Tensor]:
        """rgb [B, H, W, 3] over the background, opacity and depth [B, H, W, 1]; `lit`: shade the
        texture as albedo under the world's light (smooth normals, seen from either side)."""
        faces, positions = mesh.faces, mesh.positions()
        pos_clip = clip_positions(positions, cameras)
        rast = self.rasterizer.rasterize(pos_clip, faces, (cameras.height, cameras.width))
        uv = self.rasterizer.interpolate(mesh.uv, rast, faces)
        # Our UVs start at the texture's bottom-left (OBJ); the rasterizer's v = 0 is row 0.
        uv = torch.stack([uv[..., 0], 1.0 - uv[..., 1]], dim=-1)
        colour = self.rasterizer.texture(mesh.albedo()[None], uv, boundary_mode="clamp")
        if lit:
            colour = world_lit(colour, positions, faces, rast, cameras, self.rasterizer)
        coverage = (rast[..., 3:] > 0).to(colour.dtype)
        _, directions = cameras.rays()
        rgb = colour * coverage + (1.0 - coverage) * background(directions, training)
        depth = self.rasterizer.interpolate(pos_clip[..., 3:], rast, faces)
        blended = self.rasterizer.antialias(torch.cat([rgb, coverage], dim=-1), rast, pos_clip, faces)
        return {"rgb": blended[..., :3], "opacity": blended[..., 3:], "depth": depth}
