"""A point-cloud prior's sample -> a DMTet (the 3D prior's shape as a mesh's start).

A normal-map prior at the noise levels that keep a surface clean hardly tells a ball from a cone,
so a DMTet started from an ellipsoid never takes the prompt's outline. It starts instead from the
solid the 3D prior's sample encloses (`framework.representations.point_prior_shape`): the DMTet's
SDF is fitted to that solid's signed distance. As a conversion it is a stage's entry, so the sample
is drawn once, from its own seeded generator, and a resumed run restores the DMTet from its
checkpoint instead.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import nn

from framework.cameras.camera import CameraBatch
from framework.representations.dmtet import DMTet
from framework.representations.point_prior_shape import sample_surface_points, solid_sdf


class PointCloudToDMTet:
    """Args:
    dmtet: builds the (empty) DMTet: a callable taking an `init` keyword (a Hydra `_partial_`
        of `DMTet`).
    pretrained, clip_model: the point prior (as `PointCloudGuidance` takes them).
    prompt: what to sample.
    target: the name of the representation it makes.
    steps, guidance_scale: of the DDIM sampler (1: the conditional sample, unguided; guidance thins
        the bundled prior's samples, docs/richdreamer_notes.md).
    points: points sampled (None: the prior's own count).
    grid_resolution, shell_voxels, max_shell_voxels: of the solid the points enclose
        (`occupancy_from_surface_points`).
    min_component_fraction: pieces of the solid smaller than this fraction of the largest are dropped.
    fit_steps: Adam steps fitting a field SDF to the solid (per-vertex SDFs are set directly).
    seed: of the sample and of the fit.
    """

    def __init__(
        self,
        dmtet: Callable[..., DMTet],
        pretrained: str,
        prompt: str,
        clip_model: str | None = None,
        target: str = "dmtet",
        steps: int = 64,
        guidance_scale: float = 1.0,
        points: int | None = None,
        grid_resolution: int = 48,
        shell_voxels: int = 4,
        max_shell_voxels: int = 8,
        min_component_fraction: float = 0.05,
        fit_steps: int = 300,
        seed: int = 0,
    ) -> None:
        if not prompt or not prompt.strip():
            raise ValueError(f"{type(self).__name__} samples a point-cloud prior for a prompt: got {prompt!r}")
        self.dmtet, self.target = dmtet, target
        self.pretrained, self.clip_model, self.prompt = pretrained, clip_model, prompt
        self.steps, self.guidance_scale, self.points, self.seed = steps, guidance_scale, points, seed
        self.grid_resolution, self.shell_voxels, self.max_shell_voxels = grid_resolution, shell_voxels, max_shell_voxels
        self.min_component_fraction, self.fit_steps = min_component_fraction, fit_steps

    def __call__(self, source: nn.Module, render: Callable[[CameraBatch], dict]) -> DMTet:
        surface = sample_surface_points(self.pretrained, self.prompt, self.clip_model, self.steps, self.guidance_scale, self.points, self.seed)
        try:
            target = solid_sdf(surface, self.grid_resolution, self.shell_voxels, self.max_shell_voxels, self.min_component_fraction)
        except ValueError as error:
            raise ValueError(f"point cloud -> DMTet ({self.prompt!r}): {error}; raise convert.max_shell_voxels or lower convert.grid_resolution") from None
        dmtet = self.dmtet(init="none").to(next(source.parameters(), torch.zeros(())).device)
        dmtet.fit_sdf(target, self.fit_steps, self.seed)
        return dmtet

    def placeholder(self, shape_state: Mapping[str, Any], source: nn.Module | None = None) -> DMTet:
        """An empty DMTet of the configured shape to load a checkpoint into."""
        return self.dmtet(init="none")
