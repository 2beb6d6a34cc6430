"""A point-cloud prior's sample -> 3D Gaussians (GSGEN's start).

GSGEN begins from the 3D prior's answer to the prompt instead of a random ball: one Gaussian per
sampled point, at its colour. As a conversion it is a stage's entry (a zero-step first stage holds
the placeholder it replaces), so the sample is drawn once, from its own seeded generator, and a
resumed run restores the Gaussians from its checkpoint rather than sampling again.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import nn

from framework.cameras.camera import CameraBatch
from framework.guidance.point_cloud_prior import load_point_cloud_model
from framework.guidance.point_cloud_sampling import sample_point_clouds
from framework.representations.gaussians import GaussianModel


class PointCloudToGaussians:
    """Args:
    target: the name of the representation it makes.
    pretrained, clip_model: the point prior (as `PointCloudGuidance` takes them).
    prompt: what to sample.
    steps, guidance_scale: of the DDIM sampler (Point-E samples its base model at scale 3).
    points: points sampled (None: the prior's own count).
    seed: of the sample and of the Gaussians' initialisation.
    init_opacity, init_scale, sh_degree: of the Gaussians (`GaussianModel.from_points`; scale
        None: from the points' spacing).
    """

    def __init__(
        self,
        target: str,
        pretrained: str,
        prompt: str,
        clip_model: str | None = None,
        steps: int = 64,
        guidance_scale: float = 3.0,
        points: int | None = None,
        seed: int = 0,
        init_opacity: float = 0.1,
        init_scale: float | None = None,
        sh_degree: int = 0,
    ) -> None:
        if not prompt or not prompt.strip():
            raise ValueError(f"{type(self).__name__} samples a point-cloud prior for a prompt: got {prompt!r}")
        self.target = target
        self.pretrained, self.clip_model, self.prompt = pretrained, clip_model, prompt
        self.steps, self.guidance_scale, self.points, self.seed = steps, guidance_scale, points, seed
        self.init_opacity, self.init_scale, self.sh_degree = init_opacity, init_scale, sh_degree

    def __call__(self, source: nn.Module, render: Callable[[CameraBatch], dict]) -> GaussianModel:
        prior = load_point_cloud_model(self.pretrained, self.clip_model)
        xyz, rgb = sample_point_clouds(prior, [self.prompt], torch.Generator().manual_seed(self.seed), self.steps, self.guidance_scale, self.points)
        return GaussianModel.from_points(xyz[0], rgb[0], init_scale=self.init_scale, init_opacity=self.init_opacity, sh_degree=self.sh_degree, seed=self.seed)

    def placeholder(self, shape_state: Mapping[str, Any], source: nn.Module | None = None) -> GaussianModel:
        model = GaussianModel(n_init=0, sh_degree=self.sh_degree)
        model.load_shape_state(shape_state)
        return model
