"""Stages: a method's run as a sequence of phases, each with what is active in it.

A stage names its representation, renderer and material (keys of the system's dicts), its guidance
slots (with per-stage overrides), its loss terms and its learning rates, and optionally the
conversion that makes its representation when it is entered (Gaussians -> textured mesh, NeRF ->
DMTet, ...) and a densification of its Gaussians. Stage boundaries are fixed steps, so the stage of
any step is known in advance: a checkpoint records the stage and a resume continues exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

from torch import nn

from framework.cameras.camera import CameraBatch
from framework.schedules import Scalar, Schedule, as_scalar


class Conversion(Protocol):
    """Makes the representation named `target` from the previous stage's representation."""

    target: str

    def __call__(self, source: nn.Module, render: Callable[[CameraBatch], dict]) -> nn.Module:
        """`render(cameras)` renders the previous stage (its representation, renderer, material)."""

    def placeholder(self, shape_state: Mapping[str, Any], source: nn.Module | None) -> nn.Module:
        """An empty target of a checkpoint's shape, for its state dict to be loaded into;
        `source` is the previous stage's representation (a target that copies part of it, such
        as Magic3D's colour field, takes its architecture from there)."""


@dataclass
class Stage:
    """Args:
    name: unique within the method; what checkpoints and the progress bar show.
    steps: how many training steps it lasts (the last stage runs until `max_steps`).
    representation, renderer, material: keys of the system's `representations`, `renderers`,
        `materials`.
    slots: the guidance slots active here, each with overrides of its settings (`weight`,
        `input`, `encoded`, `estimator`); None: every slot as configured.
    losses: the loss terms active here; None: every term.
    learning_rates: parameter-name prefix -> learning rate (number or [[step, value], ...];
        None freezes the parameters under the prefix in this stage);
        names start with `representation.` (this stage's representation), `background.`,
        `material.` or `guidance.<slot>.`; None: the system's `learning_rates`.
    resolution: the training cameras' resolution in this stage; None: the camera config's.
    convert: builds this stage's representation when the stage is entered.
    densification: refines the Gaussians around every step (`Densification`), or None.
    """

    name: str
    steps: int
    representation: str = "main"
    renderer: str = "main"
    material: str = "main"
    slots: Mapping[str, Mapping[str, Any]] | None = None
    losses: Sequence[str] | None = None
    learning_rates: Mapping[str, Any] | None = None
    resolution: int | None = None
    convert: Conversion | None = None
    densification: Any = None

    def __post_init__(self) -> None:
        if int(self.steps) < 0:
            raise ValueError(f"stage {self.name!r}: steps={self.steps} must be >= 0")
        self.steps = int(self.steps)
        if self.slots is not None:
            self.slots = {name: dict(overrides or {}) for name, overrides in self.slots.items()}
        if self.losses is not None:
            self.losses = list(self.losses)
        if self.learning_rates is not None:
            self.learning_rates = {prefix: None if lr is None else as_scalar(lr) for prefix, lr in self.learning_rates.items()}


def stage_starts(stages: Sequence[Stage]) -> list[int]:
    """The first step of every stage."""
    starts, step = [], 0
    for stage in stages:
        starts.append(step)
        step += stage.steps
    return starts


def stage_index_at(stages: Sequence[Stage], step: int) -> int:
    """The stage that trains step `step` (the last one beyond the declared steps)."""
    starts = stage_starts(stages)
    return max(i for i, start in enumerate(starts) if start <= step or i == 0)


def resolution_schedule(stages: Sequence[Stage], default: Scalar) -> Scalar:
    """The camera resolution by step: each stage's own where it declares one, else `default`."""
    if all(stage.resolution is None for stage in stages):
        return default
    points = []
    for start, stage in zip(stage_starts(stages), stages):
        if stage.resolution is None and not isinstance(default, (int, float)):
            raise ValueError(f"stage {stage.name!r} declares no resolution while camera.resolution is a schedule: give every stage one")
        points.append([start, float(stage.resolution if stage.resolution is not None else default)])
    return Schedule(points, interpolation="step")
