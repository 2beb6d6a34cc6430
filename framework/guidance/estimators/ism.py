"""ISM (LucidDreamer's interval score matching): score differences along a deterministic path.

Instead of adding random noise, the render is taken to x_s (s = t - interval) by DDIM inversion
under the unconditional prediction, and one more inversion step reaches x_t. The direction is the
guided prediction at (x_t, t) minus the unconditional prediction at (x_s, s) that produced x_t,
which has far less variance than SDS's eps_hat - eps: both predictions see the same image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from framework.guidance.condition import Condition
from framework.guidance.denoising import ddim_step
from framework.guidance.estimators.base import ScoreEstimator

if TYPE_CHECKING:
    from framework.guidance.sds import ScoreDistillation


class IntervalScoreMatching(ScoreEstimator):
    """Args:
    interval: t - s, as a fraction of the model's training steps (LucidDreamer: 50 of 1000).
    inversion_stride: the largest DDIM inversion step from 0 to s, as a fraction (200 of 1000);
        each step is one unconditional model call.
    """

    name = "ism"

    def __init__(self, interval: float = 0.05, inversion_stride: float = 0.2) -> None:
        if not 0.0 < interval < 1.0 or not 0.0 < inversion_stride <= 1.0:
            raise ValueError(f"interval={interval} and inversion_stride={inversion_stride}: expected fractions of the training steps in (0, 1)")
        self.interval = interval
        self.inversion_stride = inversion_stride

    def direction(self, guidance: ScoreDistillation, x0: Tensor, timesteps: Tensor, noise: Tensor, condition: Condition) -> Tensor:
        alphas = guidance.alphas_cumprod
        n_train = alphas.shape[0]
        stride = max(1, round(self.inversion_stride * n_train))
        target = (timesteps - max(1, round(self.interval * n_train))).clamp(min=0)
        sample, current = x0, torch.zeros_like(timesteps)
        while bool((current < target).any()):
            following = torch.minimum(current + stride, target)
            sample = _ddim_step(guidance, sample, current, following, _unconditional(guidance, sample, current, condition))
            current = following
        eps_s = _unconditional(guidance, sample, target, condition)
        noisy = _ddim_step(guidance, sample, target, timesteps, eps_s)
        return guidance.guided_noise(noisy, timesteps, condition).to(x0) - eps_s


def _unconditional(guidance: ScoreDistillation, sample: Tensor, timesteps: Tensor, condition: Condition) -> Tensor:
    (prediction,) = guidance.noise_predictions(sample, timesteps, condition, halves=("unconditional",))
    return prediction.to(sample)


def _ddim_step(guidance: ScoreDistillation, sample: Tensor, current: Tensor, following: Tensor, eps: Tensor) -> Tensor:
    """Deterministic DDIM from `current` to `following` timesteps (either way) with prediction `eps`;
    a batch element whose timesteps are equal is left as it is."""
    a_now = guidance.alphas_cumprod[current].to(sample).view(-1, 1, 1, 1)
    a_next = guidance.alphas_cumprod[following].to(sample).view(-1, 1, 1, 1)
    stepped = ddim_step(sample, eps, a_now, a_next)
    return torch.where((current == following).view(-1, 1, 1, 1).to(sample.device), sample, stepped)
