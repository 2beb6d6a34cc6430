"""CSD (Yu et al., "Text-to-3D with Classifier Score Distillation"): only the classifier-free
term of SDS, s (eps(x_t; y) - eps(x_t; neg)). Without the noise residual eps(x_t; neg) - eps,
the step carries no noise, and the guidance scale only sets its size."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor

from framework.guidance.condition import Condition
from framework.guidance.estimators.base import ScoreEstimator

if TYPE_CHECKING:
    from framework.guidance.sds import ScoreDistillation


class ClassifierScoreDistillation(ScoreEstimator):
    name = "csd"

    def direction(self, guidance: ScoreDistillation, x0: Tensor, timesteps: Tensor, noise: Tensor, condition: Condition) -> Tensor:
        conditional, unconditional = guidance.noise_predictions(guidance.noisy_samples(x0, timesteps, noise), timesteps, condition)
        return guidance.guidance_scale * (conditional - unconditional).to(x0)
