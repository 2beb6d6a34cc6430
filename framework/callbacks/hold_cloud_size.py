"""Hold a Gaussian cloud's size through chosen stages.

Score distillation moves the size of a cloud of Gaussians one way or the other: over GSGEN's
1,000 steps the 2D prior grows a cube's centres 16 % (RMS radius) and shrinks a torus's 7 %, while
the 3D prior shrinks every curved surface (docs/gsgen_notes.md). Where the stage starts from a
sample of a 3D prior, that sample's size is already right (within 3 % of the true object), so
after every step of the held stages the centres are scaled about their centroid back to the RMS
radius they had after the first held step. Shapes, orientation and position stay free.
"""

from __future__ import annotations

from typing import Any, Sequence

import pytorch_lightning as pl
import torch

from framework.callbacks.cloud_hold import CloudHold


def rms_radius(points: torch.Tensor) -> torch.Tensor:
    """Root-mean-square distance of `points` [N, 3] from their centroid."""
    return (points - points.mean(dim=0)).square().sum(dim=-1).mean().sqrt()


class HoldCloudSize(CloudHold):
    """Args:
    stages: the stages whose steps are held (GSGEN: its geometry and appearance stages); none
        turns the hold off.
    """

    def __init__(self, stages: Sequence[str] = ()) -> None:
        super().__init__(stages)
        self.radius: float | None = None

    @torch.no_grad()
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        cloud = self.held_cloud(pl_module)
        if cloud is None:
            return
        means = cloud.params["means"]
        radius = rms_radius(means)
        if self.radius is None:
            self.radius = float(radius)
        centre = means.mean(dim=0)
        means.copy_(centre + (means - centre) * (self.radius / radius))

    def state_dict(self) -> dict[str, Any]:
        return {"radius": self.radius}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.radius = state_dict["radius"]
