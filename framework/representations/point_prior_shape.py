"""A point-cloud prior's answer to the prompt, as a solid a representation starts from.

A NeRF started from DreamFusion's ball, or a DMTet from an ellipsoid, must carve every outline out
of a blob under a 2D prior, and a 2D prior trained on white backgrounds never asks for a hole: a
torus's hole filled with a white membrane looks just like the hole. The 3D prior's sample of the
prompt (GSGEN's start) gives the shape instead: its surface points are closed into a solid
(`occupancy_from_surface_points`, holes kept) whose signed distance the representation starts
from. `PointCloudToDMTet` fits a DMTet to it; `PointPriorShape` is a NeRF's `shape`, the bias its
density starts from.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from framework.guidance.point_cloud_prior import load_point_cloud_model
from framework.guidance.point_cloud_sampling import sample_point_clouds
from framework.representations.mesh_sdf import GridSDF, occupancy_from_surface_points, sdf_from_occupancy


def sample_surface_points(
    pretrained: str, prompt: str, clip_model: str | None = None, steps: int = 64, guidance_scale: float = 1.0, points: int | None = None, seed: int = 0
) -> Tensor:
    """The point prior's sample of `prompt`: surface points [N, 3], drawn from a generator of their
    own seeded with `seed`, so a resumed run that samples again draws the same points."""
    prior = load_point_cloud_model(pretrained, clip_model)
    xyz, _ = sample_point_clouds(prior, [prompt], torch.Generator().manual_seed(seed), steps, guidance_scale, points)
    return xyz[0]


def solid_sdf(points: Tensor, grid_resolution: int = 48, shell_voxels: int = 4, max_shell_voxels: int = 8, min_component_fraction: float = 0.05) -> GridSDF:
    """The signed distance of the solid that surface `points` [N, 3] enclose.

    Raises:
        ValueError: if they enclose nothing at any shell up to `max_shell_voxels`.
    """
    solid = occupancy_from_surface_points(points, grid_resolution, shell_voxels=shell_voxels, max_shell_voxels=max_shell_voxels)
    return sdf_from_occupancy(solid, min_component_fraction=min_component_fraction)


class PointPriorShape(nn.Module):
    """The solid of the point prior's sample of `prompt`, as a signed distance: a NeRF's `shape`.

    Sampled once, when built; the grid is a buffer, so a checkpoint holds it and a resumed run
    reads the shape it trained from (no prior weight is kept). Arguments as `sample_surface_points`'
    and `solid_sdf`'s (`guidance_scale` 1: the conditional sample, unguided; guidance thins the
    bundled prior's samples, docs/richdreamer_notes.md).
    """

    def __init__(
        self,
        pretrained: str,
        prompt: str | None,
        clip_model: str | None = None,
        steps: int = 64,
        guidance_scale: float = 1.0,
        points: int | None = None,
        grid_resolution: int = 48,
        shell_voxels: int = 4,
        max_shell_voxels: int = 8,
        min_component_fraction: float = 0.05,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not prompt or not prompt.strip():
            raise ValueError(f"a point-prior shape samples a point-cloud prior for a prompt: got {prompt!r} (without a prompt, set representation.shape=null)")
        surface = sample_surface_points(pretrained, prompt, clip_model, steps, guidance_scale, points, seed)
        try:
            sdf = solid_sdf(surface, grid_resolution, shell_voxels, max_shell_voxels, min_component_fraction)
        except ValueError as error:
            raise ValueError(f"point-prior shape ({prompt!r}): {error}; raise representation.shape.max_shell_voxels, or set representation.shape=null") from None
        self.bound = sdf.bound
        self.register_buffer("values", sdf.values)

    def forward(self, points: Tensor) -> Tensor:
        """points [..., 3] -> signed distance [...] (negative inside)."""
        return GridSDF(self.values, self.bound)(points.reshape(-1, 3)).view(points.shape[:-1])
