"""What a score-distillation estimator is: the direction in which one step moves the samples.

SDS, VSD, ISM, CSD and NFSD differ only in that direction (what the noise residual is replaced
by); the timesteps, the noise, w(t), clipping and the loss stay in `ScoreDistillation.estimate`,
so an estimator is a few lines and never a copy of the SDS step. An estimator with trainable parts
(VSD's LoRA and camera embedding) returns them from `trainable_modules`; the system optimises and
checkpoints exactly those, beside the guidance's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import Tensor, nn

from framework.guidance.condition import Condition

if TYPE_CHECKING:
    from framework.guidance.sds import ScoreDistillation


class ScoreEstimator:
    """A score-distillation direction; `name` names its loss (`loss_<name>`) and logs."""

    name: str

    def direction(self, guidance: ScoreDistillation, x0: Tensor, timesteps: Tensor, noise: Tensor, condition: Condition) -> Tensor:
        """The gradient on samples `x0` [B, C, h, w] before w(t): SDS's is eps_hat - eps, for
        `x0` noised with `noise` at `timesteps`. Called without autograd."""
        raise NotImplementedError

    def terms(self, guidance: ScoreDistillation, x0: Tensor, condition: Condition) -> dict[str, Tensor]:
        """Extra terms of the step (`loss_*` are weighted into the total), from the detached
        samples: VSD's LoRA loss. None by default."""
        return {}

    def bind(self, guidance: ScoreDistillation) -> None:
        """Called once with the guidance it will serve, before training (VSD adds its LoRA)."""

    def trainable_modules(self) -> dict[str, nn.Module]:
        """Parts that train beside the 3D parameters; none by default."""
        return {}
