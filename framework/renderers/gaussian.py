"""Render 3D Gaussians from a camera batch: gsplat on CUDA, our tile rasterizer on CPU.

Every renderer takes (representation, material, background, cameras, shading, training), so the
generation system, validation grids and turntables treat them alike. Gaussians carry their colour
directly (no shading); their normals come from the rendered depth.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framework.cameras.camera import CameraBatch
from framework.renderers.splatting import rasterize_gaussians
from framework.representations.gaussians import GaussianModel
from framework.representations.materials import Shading


def normals_from_depth(depth: Tensor, cameras: CameraBatch) -> Tensor:
    """[B, H, W, 3] unit world normals of the surface a camera-z `depth` map [B, H, W, 1] shows
    (central differences of the unprojected points), turned towards the camera."""
    origins, directions = cameras.rays()
    forward = -cameras.c2w[:, None, None, :3, 2]  # OpenGL: the camera looks down -z
    points = origins + directions * depth / (directions * forward).sum(-1, keepdim=True)
    padded = F.pad(points.permute(0, 3, 1, 2), (1, 1, 1, 1), mode="replicate").permute(0, 2, 3, 1)
    along_x = padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2]
    along_y = padded[:, :-2, 1:-1] - padded[:, 2:, 1:-1]
    normals = F.normalize(torch.cross(along_x, along_y, dim=-1), dim=-1)
    return torch.where((normals * directions).sum(-1, keepdim=True) > 0, -normals, normals)


class GaussianRenderer(nn.Module):
    """Args:
    backend: "auto" (gsplat when the Gaussians are on CUDA), "torch" or "cuda".
    near_plane: Gaussians closer to the camera than this are culled.
    eps2d: the low-pass added to every projected covariance (pixels^2).
    tile_size: side of the rasterizer's tiles in pixels; None: 16 for gsplat's kernels, 8 for
        the torch rasterizer (measured ~35 % faster on CPU, same images).
    """

    def __init__(self, backend: str = "auto", near_plane: float = 0.01, eps2d: float = 0.3, tile_size: int | None = None) -> None:
        super().__init__()
        self.backend = backend
        self.near_plane = near_plane
        self.eps2d = eps2d
        self.tile_size = tile_size

    def update(self, gaussians: GaussianModel, step: int) -> None:
        """Nothing to refresh per step (the volume renderer updates its occupancy grid here)."""

    def forward(
        self,
        gaussians: GaussianModel,
        material: nn.Module,
        background: nn.Module,
        cameras: CameraBatch,
        shading: Shading,
        training: bool,
    ) -> dict[str, Tensor]:
        """rgb [B, H, W, 3] over the background, opacity and depth [B, H, W, 1], normal
        [B, H, W, 3] (from the depth, zero where nothing is drawn), and `info` (what gsplat's
        strategies read: means2d with its gradient, radii, sizes)."""
        colours, alphas, info = rasterize_gaussians(
            gaussians.means,
            gaussians.quats,
            gaussians.scales,
            gaussians.opacities,
            gaussians.colors,
            cameras.world_to_camera_opencv(),
            cameras.intrinsics(),
            cameras.width,
            cameras.height,
            near_plane=self.near_plane,
            eps2d=self.eps2d,
            sh_degree=gaussians.sh_degree,
            tile_size=self.tile_size or (16 if gaussians.means.is_cuda else 8),
            render_mode="RGB+ED",
            backend=self.backend,
        )
        _, directions = cameras.rays()
        rgb = colours[..., :3] + (1.0 - alphas) * background(directions, training)
        depth = colours[..., 3:4]
        normal = normals_from_depth(depth, cameras) * (alphas.detach() > 0.5)
        return {"rgb": rgb, "opacity": alphas, "depth": depth, "normal": normal, "info": info}
