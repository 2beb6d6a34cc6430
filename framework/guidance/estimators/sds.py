"""SDS (DreamFusion): the classifier-free guided noise prediction minus the noise that was added."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from framework.guidance.condition import Condition
from framework.guidance.estimators.base import ScoreEstimator

if TYPE_CHECKING:
    from framework.guidance.sds import ScoreDistillation


class ScoreDistillationSampling(ScoreEstimator):
    """eps_hat(x_t; y) - eps, eps_hat = eps(x_t; neg) + s (eps(x_t; y) - eps(x_t; neg))."""

    name = "sds"

    def direction(self, guidance: ScoreDistillation, x0: Tensor, timesteps: Tensor, noise: Tensor, condition: Condition) -> Tensor:
        noisy = guidance.noisy_samples(x0, timesteps, noise)
        return guidance.guided_noise(noisy, timesteps, condition).to(x0) - noise


SCORE_DISTILLATION = ScoreDistillationSampling()
