"""Which way does score distillation push, at each noise level?

For renders of a wrong object (say a cylinder) under the prompt of another ("a yellow cone"), the
cosine between the score-distillation step (SDS's: -w(t) (eps_hat - eps); or another estimator's)
and the direction from the wrong renders to the prompted object's renders (same cameras). Near zero, that timestep band hardly tells the two
shapes apart, and an SDS schedule that spends its early steps there lets the wrong outline
settle; this is how DreamGaussian's t_min schedule was chosen.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from bundled.world.objects import OBJECTS, parse_prompt
from bundled.world.render import render_object
from framework.cameras.distribution import OrbitDistribution
from framework.guidance.condition import Condition
from framework.guidance.estimators.base import ScoreEstimator
from framework.guidance.estimators.sds import SCORE_DISTILLATION
from framework.guidance.sds import ScoreDistillation


@torch.no_grad()
def sds_direction(
    guidance: ScoreDistillation,
    prompt: str,
    source: str,
    timesteps: Sequence[float],
    n_views: int = 16,
    n_noise: int = 3,
    resolution: int = 64,
    seed: int = 0,
    estimator: ScoreEstimator = SCORE_DISTILLATION,
) -> list[float]:
    """Mean cosine, per timestep fraction in `timesteps`, between the step of `estimator` on
    renders of the world object `source` and (prompted object's renders - source renders), over
    `n_views` cameras of the SDS distribution and `n_noise` noise draws each (w(t) is one positive
    number per timestep: it leaves the cosine as it is)."""
    colour, target = parse_prompt(prompt)
    if source not in OBJECTS or source == target:
        raise ValueError(f"source={source!r}: expected an object of the world other than the prompt's {target!r}, one of {sorted(OBJECTS)}")
    if not timesteps or not all(0.0 < t < 1.0 for t in timesteps):
        raise ValueError(f"timesteps={list(timesteps)!r}: give fractions of the schedule strictly between 0 and 1")
    generator = torch.Generator().manual_seed(seed)
    cameras = OrbitDistribution().sample(n_views, resolution, generator)
    x0, goal = (guidance.encode_images(render_object(OBJECTS[name], colour, cameras)[0].permute(0, 3, 1, 2)) for name in (source, target))
    towards = (goal - x0).flatten(1)
    condition = Condition(cameras, text=prompt)
    n_train = guidance.alphas_cumprod.shape[0]
    cosines = []
    for fraction in timesteps:
        t = torch.full((n_views,), min(int(fraction * n_train), n_train - 1))
        total = 0.0
        for _ in range(n_noise):
            step = -estimator.direction(guidance, x0, t, torch.randn(x0.shape, generator=generator), condition)
            total += F.cosine_similarity(step.flatten(1), towards).mean().item()
        cosines.append(total / n_noise)
    return cosines
