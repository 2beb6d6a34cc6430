"""Skip optimiser steps whose loss or gradients are NaN/Inf, and stop after too many in a row.

One bad step (an fp16 overflow in the prior, a degenerate render) should not poison the weights or
the Adam moments, so its update is dropped: the gradients are set to None, which torch's
optimisers skip without touching parameters or state. A run whose steps stay bad is broken, not
unlucky, so after `max_bad_steps` consecutive bad steps it stops; the parameters never took a bad
update, so every checkpoint written meanwhile still holds the last good weights.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor

from framework.utils.errors import RunStopped


class NonFiniteStepError(RunStopped):
    """Raised after `max_bad_steps` consecutive steps with a non-finite loss or gradient."""


def is_finite(value: Tensor) -> bool:
    return bool(torch.isfinite(value).all())


class NonFiniteGuard:
    """Decides per step whether the optimiser may step, and counts the steps it skipped.

    Args:
        max_bad_steps: consecutive skipped steps after which the run stops (>= 1).
    """

    def __init__(self, max_bad_steps: int = 20) -> None:
        if max_bad_steps < 1:
            raise ValueError(f"max_bad_steps={max_bad_steps}: need at least 1")
        self.max_bad_steps = int(max_bad_steps)
        self.skipped_steps = 0
        self.consecutive = 0

    def admit(self, step: int, loss_finite: bool, parameters: Iterable[Tensor], agree: Callable[[bool], bool] = bool) -> bool:
        """True when the step may go ahead; otherwise drop its gradients, count it and return False.

        Args:
            step: the training step (for the error message).
            loss_finite: whether this step's loss was finite.
            parameters: the parameters the optimiser is about to update.
            agree: turns this process's verdict into every process's (with several devices the
                ranks must skip together, e.g. `strategy.reduce_boolean_decision`).

        Raises:
            NonFiniteStepError: on the `max_bad_steps`-th consecutive bad step.
        """
        parameters = list(parameters)
        grads = [p.grad for p in parameters if p.grad is not None]
        finite = loss_finite and (not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()))
        if agree(finite):
            self.consecutive = 0
            return True
        for parameter in parameters:
            parameter.grad = None
        self.skipped_steps += 1
        self.consecutive += 1
        if self.consecutive >= self.max_bad_steps:
            raise NonFiniteStepError(
                f"step {step}: the loss or its gradients were NaN/Inf for {self.consecutive} consecutive steps "
                f"(max_bad_steps={self.max_bad_steps}); stopped, the last checkpoint holds the last good weights"
            )
        return False

    def state_dict(self) -> dict[str, int]:
        return {"skipped_steps": self.skipped_steps, "consecutive": self.consecutive}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.skipped_steps = int(state["skipped_steps"])
        self.consecutive = int(state["consecutive"])
