"""NFSD (Katzir et al., "Noise-Free Score Distillation"): SDS without its noise term.

The unconditional prediction is split into a noise part and a domain correction delta_D. At small
timesteps the unconditional prediction is taken as delta_D itself; above them delta_D is the
difference between the unconditional prediction and one under a negative prompt (what a render
should not look like). The direction is delta_D + s (eps(x_t; y) - eps(x_t; neg)).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from framework.guidance.condition import Condition
from framework.guidance.estimators.base import ScoreEstimator

if TYPE_CHECKING:
    from framework.guidance.sds import ScoreDistillation

PAPER_NEGATIVE_PROMPT = "unrealistic, blurry, low quality, out of focus, ugly, low contrast, dull, dark, low-resolution, gloomy"


class NoiseFreeScoreDistillation(ScoreEstimator):
    """Args:
    negative_prompt: the prompt of delta_D above `small_t` (the paper's by default; a prior
        whose vocabulary lacks its words warns once). None, or a prior that reads no text
        (Zero-1-to-3): delta_D is the unconditional prediction at every timestep.
    small_t: the timestep, as a fraction of the model's training steps, below which
        delta_D is the unconditional prediction (the paper: 200 of 1000).
    """

    name = "nfsd"

    def __init__(self, negative_prompt: str | None = PAPER_NEGATIVE_PROMPT, small_t: float = 0.2) -> None:
        if not 0.0 <= small_t <= 1.0:
            raise ValueError(f"small_t={small_t}: expected a fraction of the training steps in [0, 1]")
        self.negative_prompt = negative_prompt
        self.small_t = small_t

    def direction(self, guidance: ScoreDistillation, x0: Tensor, timesteps: Tensor, noise: Tensor, condition: Condition) -> Tensor:
        noisy = guidance.noisy_samples(x0, timesteps, noise)
        conditional, unconditional = guidance.noise_predictions(noisy, timesteps, condition)
        domain = unconditional
        large = timesteps >= round(self.small_t * guidance.alphas_cumprod.shape[0])
        if self.negative_prompt is not None and condition.text is not None and bool(large.any()):
            (negative,) = guidance.noise_predictions(noisy, timesteps, replace(condition, text=self.negative_prompt), halves=("conditional",))
            domain = torch.where(large.view(-1, 1, 1, 1).to(noisy.device), unconditional - negative, unconditional)
        return (domain + guidance.guidance_scale * (conditional - unconditional)).to(x0)
