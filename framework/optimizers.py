"""Several named optimisers that Lightning sees as one.

gsplat's densification strategies replace a parameter together with its Adam moments, so every
parameter needs an optimiser of its own; Lightning's manual optimisation counts one training step
per `step()` of a registered optimiser. `OptimizerGroup` is both: Lightning registers the group,
the strategy gets `members`, and a stage switch swaps the members in place (Lightning's wrapper
shares the `members` dict, so it follows).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any, Callable

import torch
from torch import Tensor
from torch.optim import Optimizer


class _MemberStates(MutableMapping):
    """`optimizer.state` of the group: each parameter's state lives in the member that owns it."""

    def __init__(self, members: dict[str, Optimizer]) -> None:
        self._members = members

    def _owner(self, parameter: Tensor) -> Optimizer:
        for optimizer in self._members.values():
            if any(p is parameter for group in optimizer.param_groups for p in group["params"]):
                return optimizer
        raise KeyError("the parameter belongs to no member optimiser")

    def __getitem__(self, parameter: Tensor) -> Any:
        return self._owner(parameter).state[parameter]

    def __setitem__(self, parameter: Tensor, value: Any) -> None:
        self._owner(parameter).state[parameter] = value

    def __delitem__(self, parameter: Tensor) -> None:
        del self._owner(parameter).state[parameter]

    def __iter__(self) -> Iterator[Tensor]:
        for optimizer in self._members.values():
            yield from optimizer.state

    def __len__(self) -> int:
        return sum(len(optimizer.state) for optimizer in self._members.values())


class OptimizerGroup(Optimizer):
    """Args:
    members: name -> optimiser (names are the keys a densification strategy uses).
    """

    def __init__(self, members: dict[str, Optimizer]) -> None:
        # Optimizer.__init__ is not called: the group owns no parameters of its own.
        self.members = dict(members)
        self.defaults: dict[str, Any] = {}
        self._optimizer_step_pre_hooks: dict = {}
        self._optimizer_step_post_hooks: dict = {}

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return [group for optimizer in self.members.values() for group in optimizer.param_groups]

    @property
    def state(self) -> _MemberStates:  # type: ignore[override]
        return _MemberStates(self.members)

    def replace_members(self, members: dict[str, Optimizer]) -> None:
        """Swap the optimisers (a stage switch); the dict object is kept so wrappers see it."""
        self.members.clear()
        self.members.update(members)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for optimizer in self.members.values():
            optimizer.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.members.values():
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {name: optimizer.state_dict() for name, optimizer in self.members.items()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        if set(state_dict) != set(self.members):
            raise ValueError(f"optimiser state for {sorted(state_dict)} but this stage optimises {sorted(self.members)}")
        for name, optimizer in self.members.items():
            optimizer.load_state_dict(state_dict[name])

    def __repr__(self) -> str:
        return f"OptimizerGroup({', '.join(self.members)})"
