"""A pure-torch occupancy grid: skips empty space when volume rendering on any device."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class OccupancyGrid(nn.Module):
    """A cubic grid over [-bound, bound]^3 marking cells whose density may matter.

    Every `update_every` steps the density at a jittered point per cell is folded into a running
    maximum that decays by `decay`; a cell is occupied when that value exceeds
    min(`density_threshold`, its mean over the grid), and its neighbours are marked occupied too
    (one jittered point per cell can miss a surface that only clips the cell). The jitter of an update is seeded by the step,
    so a resumed run updates exactly as an uninterrupted one (the grid is a checkpointed buffer).
    """

    def __init__(
        self,
        resolution: int = 32,
        bound: float = 1.0,
        density_threshold: float = 0.1,
        decay: float = 0.95,
        update_every: int = 16,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if resolution < 2:
            raise ValueError(f"OccupancyGrid resolution={resolution}: need at least 2")
        self.resolution = resolution
        self.bound = bound
        self.density_threshold = density_threshold
        self.decay = decay
        self.update_every = update_every
        self.seed = seed
        # Start fully occupied: nothing is skipped until the field has been looked at.
        self.register_buffer("density", torch.full((resolution,) * 3, float("inf")))
        self.register_buffer("occupied", torch.ones((resolution,) * 3, dtype=torch.bool))

    def cell_index(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Flat cell indices [N] of points [N, 3] and whether each lies inside the grid [N]."""
        unit = (points + self.bound) / (2 * self.bound)
        inside = ((unit >= 0) & (unit < 1)).all(dim=-1)
        ijk = (unit.clamp(0, 1 - 1e-6) * self.resolution).long()
        flat = (ijk[:, 0] * self.resolution + ijk[:, 1]) * self.resolution + ijk[:, 2]
        return flat, inside

    def query(self, points: Tensor) -> Tensor:
        """Bool [N]: points [N, 3] that lie in occupied cells."""
        flat, inside = self.cell_index(points)
        return inside & self.occupied.view(-1)[flat]

    @torch.no_grad()
    def update(self, density_fn: Callable[[Tensor], Tensor], step: int, chunk: int = 65536) -> bool:
        """Refresh the grid from `density_fn` (points [N, 3] -> [N]) when `step` is due."""
        if step % self.update_every != 0:
            return False
        r = self.resolution
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        axis = torch.arange(r, dtype=torch.float32)
        ijk = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).view(-1, 3)
        jitter = torch.rand(ijk.shape, generator=generator)
        points = ((ijk + jitter) / r * 2 - 1) * self.bound
        points = points.to(self.density.device)
        fresh = torch.cat([density_fn(points[i : i + chunk]) for i in range(0, points.shape[0], chunk)])
        previous = torch.where(torch.isinf(self.density.view(-1)), torch.zeros_like(fresh), self.density.view(-1))
        running = torch.maximum(previous * self.decay, fresh)
        self.density.copy_(running.view(r, r, r))
        threshold = min(self.density_threshold, running.mean().item())
        dense = (self.density > threshold).float()[None, None]
        self.occupied.copy_(F.max_pool3d(dense, kernel_size=3, stride=1, padding=1)[0, 0] > 0)
        return True
