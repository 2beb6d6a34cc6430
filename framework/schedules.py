"""One schedule type for every scalar that changes during training (loss weights, timestep
range, resolution, batch size)."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Sequence, Union


@dataclass
class Schedule:
    """A scalar as a function of the global step: piecewise linear (or stepwise) through
    `points` = [[step, value], ...], constant before the first and after the last point.

    Example: `Schedule([[0, 0.98], [500, 0.5]])` anneals a timestep bound from 0.98 to 0.5.
    """

    points: Sequence[Sequence[float]] = field(default_factory=lambda: [[0, 0.0]])
    interpolation: str = "linear"  # or "step"

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError("Schedule.points is empty: give at least one [step, value] pair")
        if self.interpolation not in ("linear", "step"):
            raise ValueError(f"Schedule.interpolation={self.interpolation!r}: expected 'linear' or 'step'")
        steps = [float(p[0]) for p in self.points]
        if any(b < a for a, b in zip(steps, steps[1:])):
            raise ValueError(f"Schedule.points={list(map(list, self.points))!r}: steps must not decrease")
        self._steps = steps
        self._values = [float(p[1]) for p in self.points]

    def __call__(self, step: int) -> float:
        i = bisect_right(self._steps, step)
        if i == 0:
            return self._values[0]
        if i == len(self._steps) or self.interpolation == "step":
            return self._values[i - 1]
        s0, s1 = self._steps[i - 1], self._steps[i]
        v0, v1 = self._values[i - 1], self._values[i]
        return v0 + (v1 - v0) * (step - s0) / (s1 - s0)


Scalar = Union[float, int, Schedule]


def as_scalar(value: object) -> Scalar:
    """A number, a Schedule, or a list of [step, value] pairs (read as a linear Schedule)."""
    if isinstance(value, (int, float, Schedule)):
        return value
    points = [list(map(float, point)) for point in value]  # type: ignore[union-attr]
    return Schedule(points)


def value_at(scalar: Scalar, step: int) -> float:
    """The value of a plain number or a Schedule at `step`."""
    return scalar(step) if isinstance(scalar, Schedule) else float(scalar)
