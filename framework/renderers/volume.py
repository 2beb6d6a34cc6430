"""Volume rendering of a NeRF field with nerfacc's compositing functions.

Samples are stratified between the ray's entry into and exit from the unit sphere; samples in
empty cells of the occupancy grid are never sent to the field. Compositing uses nerfacc's batched
(`[rays, samples]`) functions, which run on CPU and CUDA alike.
"""

from __future__ import annotations

import torch
from nerfacc import accumulate_along_rays, render_weight_from_density
from torch import Tensor, nn

from framework.cameras.camera import CameraBatch
from framework.renderers.depth_map import depth_map
from framework.renderers.normal_map import normal_map
from framework.renderers.occupancy import OccupancyGrid
from framework.representations.materials import Shading
from framework.representations.nerf import NeRFField


def unit_sphere_interval(origins: Tensor, directions: Tensor, radius: float = 1.0) -> tuple[Tensor, Tensor]:
    """Entry and exit distances [R] of rays [R, 3] through the sphere; equal where they miss."""
    b = (origins * directions).sum(-1)
    c = (origins * origins).sum(-1) - radius * radius
    root = (b * b - c).clamp(min=0.0).sqrt()
    near = (-b - root).clamp(min=0.0)
    far = (-b + root).clamp(min=0.0)
    return near, torch.maximum(near, far)


class VolumeRenderer(nn.Module):
    """Renders `rgb`, `opacity`, `depth` (along the ray), `normal`, `albedo` and `z_variance`
    maps, all [B, H, W, C] (`normal` when the material shades with normals or in training), and
    the images a prior of other domains sees, as the DMTet renderer gives them: `depth_map`
    (`framework.renderers.depth_map`) and, with normals, `normal_map`
    (`framework.renderers.normal_map`), both blended by the opacity.

    Args:
        n_samples: stratified samples per ray (training jitters them with the renderer's
            generator; evaluation uses bin centres).
        occupancy: the empty-space grid, or None to evaluate every sample.
        radius: of the bounding sphere.
        seed: of the jitter generator (checkpointed by the system).
    """

    def __init__(self, n_samples: int = 64, occupancy: OccupancyGrid | None = None, radius: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        if n_samples < 1:
            raise ValueError(f"VolumeRenderer n_samples={n_samples}: need at least 1")
        self.n_samples = n_samples
        self.occupancy = occupancy
        self.radius = radius
        self.generator = torch.Generator().manual_seed(seed)

    def update(self, field: NeRFField, step: int) -> None:
        """Per-step bookkeeping of the acceleration structure (shared by a set of particles, so it
        covers all of them)."""
        if self.occupancy is not None:
            self.occupancy.update(getattr(field, "union_density", field.density), step)

    def forward(self, field: NeRFField, material: nn.Module, background: nn.Module, cameras: CameraBatch, shading: Shading, training: bool) -> dict[str, Tensor]:
        origins, directions = cameras.rays()
        B, H, W = directions.shape[:3]
        origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
        n_rays, S = origins.shape[0], self.n_samples

        near, far = unit_sphere_interval(origins, directions, self.radius)
        edges = torch.linspace(0.0, 1.0, S + 1, device=origins.device)
        edges = near[:, None] + (far - near)[:, None] * edges  # [R, S + 1]
        t_starts, t_ends = edges[:, :-1], edges[:, 1:]
        if training:
            u = torch.rand(n_rays, S, generator=self.generator).to(origins)
        else:
            u = torch.full((n_rays, S), 0.5, device=origins.device)
        t_mid = t_starts + (t_ends - t_starts) * u
        points = origins[:, None, :] + t_mid[..., None] * directions[:, None, :]  # [R, S, 3]

        keep = (t_ends > t_starts).reshape(-1)
        if self.occupancy is not None:
            keep = keep & self.occupancy.query(points.reshape(-1, 3))
        kept_points = points.reshape(-1, 3)[keep]
        ray_of_sample = torch.arange(n_rays, device=origins.device).repeat_interleave(S)[keep]

        density, albedo = field(kept_points)
        normals = field.normals(kept_points, density) if material.requires_normals or training else None
        colours = material.shade(albedo, normals, kept_points, directions[ray_of_sample], shading, torch.div(ray_of_sample, H * W, rounding_mode="floor"))

        sigmas = torch.zeros(n_rays * S, device=origins.device, dtype=density.dtype).index_put((keep.nonzero(as_tuple=True)[0],), density)
        weights, _, _ = render_weight_from_density(t_starts, t_ends, sigmas.view(n_rays, S))
        kept_weights = weights.reshape(-1)[keep]

        def composite(values: Tensor) -> Tensor:
            dense = values.new_zeros(n_rays * S, values.shape[-1]).index_put((keep.nonzero(as_tuple=True)[0],), values)
            return accumulate_along_rays(weights, dense.view(n_rays, S, -1))

        opacity = weights.sum(dim=-1, keepdim=True)
        rgb = composite(colours)
        depth = accumulate_along_rays(weights, t_mid[..., None])
        z_second = accumulate_along_rays(weights, (t_mid**2)[..., None])
        z_variance = (z_second - depth**2 / opacity.clamp(min=1e-6)).clamp(min=0.0)
        bg = background(directions.view(B, H, W, 3), training).reshape(-1, 3)
        outputs = {
            "rgb": rgb + (1.0 - opacity) * bg,
            "opacity": opacity,
            "depth": depth / opacity.clamp(min=1e-6),
            "z_variance": z_variance,
            "albedo": composite(albedo),
        }
        if normals is not None:
            outputs["normal"] = composite(normals)
        maps = {key: value.view(B, H, W, -1) for key, value in outputs.items()}
        forward = -cameras.c2w[:, :3, 2].to(directions)  # OpenGL: the camera looks down its -z
        along_view_axis = (directions.view(B, H, W, 3) * forward.view(B, 1, 1, 3)).sum(dim=-1, keepdim=True)
        maps["depth_map"] = depth_map(maps["depth"] * along_view_axis, maps["opacity"], cameras)
        if normals is not None:
            maps["normal_map"] = normal_map(maps["normal"], maps["opacity"], cameras)
        # Per-sample quantities for regularisers (e.g. the orientation loss).
        if normals is not None:
            maps["sample_weights"] = kept_weights
            maps["sample_normals"] = normals
            maps["sample_directions"] = directions[ray_of_sample]
        return maps
