"""What the holds of a Gaussian cloud share: the stages they act in, checked against the run's at
the start, and the cloud of the current step when it is one of them."""

from __future__ import annotations

from typing import Sequence

import pytorch_lightning as pl

from framework.representations.gaussians import GaussianModel
from framework.system import GenerationSystem


class CloudHold(pl.Callback):
    """Args:
    stages: the stages whose steps are held (GSGEN: its geometry and appearance stages); none
        turns the hold off.
    """

    def __init__(self, stages: Sequence[str] = ()) -> None:
        self.stages = list(stages)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, GenerationSystem)
        unknown = sorted(set(self.stages) - {stage.name for stage in pl_module.stages})
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown stages {unknown}; the run's stages are {[stage.name for stage in pl_module.stages]}")

    def held_cloud(self, pl_module: pl.LightningModule) -> GaussianModel | None:
        """The current representation if this step is held: a held stage's cloud of 2 or more Gaussians."""
        assert isinstance(pl_module, GenerationSystem)
        cloud = pl_module.representation
        if pl_module.stage.name not in self.stages or not isinstance(cloud, GaussianModel) or cloud.num_gaussians < 2:
            return None
        return cloud
