"""VSD's particles: n independent representations optimised side by side under one prior.

ProlificDreamer treats the 3D parameters as samples of a distribution: each particle is its own
representation, and the LoRA of `framework/guidance/estimators/vsd.py` learns the distribution of
all their renders. A training step renders `per_step` particles, drawn afresh from the step
number (so a resumed run draws what an uninterrupted one would), each on its share of the camera
batch. Everywhere else (validation, conversions to the next stage, exports) the set stands for
its first particle: attribute access falls through to it.

Only representations of a fixed shape can be particles: Gaussians densify and a DMTet's mesh is
rebuilt, and the checkpoint records the shape of one representation only.
"""

from __future__ import annotations

import copy
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from framework.cameras.camera import CameraBatch


class Particles(nn.Module):
    """Args:
        particle: the first particle; the others are copies of it that redraw their weights
            (`redrawn`), each from the global generator.
        count: n, the number of particles.
        per_step: particles a training step renders; the camera batch is split evenly among them.
        seed: with the step number, which particles a step renders.
    """

    def __init__(self, particle: nn.Module, count: int = 1, per_step: int = 1, seed: int = 0) -> None:
        super().__init__()
        if count < 1 or not 1 <= per_step <= count:
            raise ValueError(f"particles: count={count} must be at least 1 and per_step={per_step} between 1 and count")
        if hasattr(particle, "shape_state"):
            raise ValueError(f"particles of {type(particle).__name__} are not supported: its shape changes while it trains; use a NeRF")
        self.members = nn.ModuleList([particle, *(redrawn(particle) for _ in range(count - 1))])
        self.per_step = per_step
        self.seed = seed

    def __getattr__(self, name: str) -> Any:
        """What the set does outside a training step, it does as its first particle."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "members":
                raise
            return getattr(self.members[0], name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.members[0](*args, **kwargs)

    def union_density(self, points: Tensor) -> Tensor:
        """The largest density of any particle at `points` [N, 3] -> [N]: what an occupancy grid
        shared by every particle must cover."""
        return torch.stack([member.density(points) for member in self.members]).amax(dim=0)

    def drawn(self, step: int) -> list[int]:
        """The particles that training step `step` renders, in camera order."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        return torch.randperm(len(self.members), generator=generator)[: self.per_step].tolist()

    def assign(self, cameras: CameraBatch, step: int) -> list[tuple[nn.Module, CameraBatch]]:
        """(particle, its cameras) for training step `step`: consecutive equal shares of the batch."""
        if cameras.batch_size % self.per_step:
            raise ValueError(f"particles: camera.batch_size={cameras.batch_size} must be a multiple of per_step={self.per_step}")
        share = cameras.batch_size // self.per_step
        return [(self.members[index], cameras.subset(slice(i * share, (i + 1) * share))) for i, index in enumerate(self.drawn(step))]

    def rate_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Every particle's parameters under the names one particle gives them, so the learning
        rates of a stage (`representation.encoding: 0.01`) apply to each particle alike."""
        for member in self.members:
            yield from member.named_parameters()


def redrawn(module: nn.Module) -> nn.Module:
    """A copy of `module` whose parts each draw their initialisation again (`reset_parameters`,
    from the global generator).

    Raises:
        ValueError: a weight would start equal to `module`'s, since its part cannot redraw it.
    """
    fresh = copy.deepcopy(module)
    for part in fresh.modules():
        if hasattr(part, "reset_parameters"):
            part.reset_parameters()
    alike = [name for (name, old), new in zip(module.named_parameters(), fresh.parameters()) if torch.equal(old, new)]
    if alike:
        raise ValueError(f"particles: {type(module).__name__}'s {alike[0]} would start alike in every particle (its module has no reset_parameters())")
    return fresh


def shown(representation: nn.Module) -> nn.Module:
    """What stands for `representation` outside training: itself, or a set's first particle (the
    one a conversion to the next stage starts from)."""
    return representation.members[0] if isinstance(representation, Particles) else representation


def concatenate_renders(renders: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Renders of consecutive camera shares as one render of the whole batch (images and
    per-sample lists alike are joined along their first dimension)."""
    if len(renders) == 1:
        return renders[0]
    return {key: torch.cat([render[key] for render in renders]) for key in renders[0]}
