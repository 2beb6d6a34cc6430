"""A stand-in GenerationSystem for the cloud holds' tests: just the current stage's name and cloud."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from framework.representations.gaussians import GaussianModel
from framework.system import GenerationSystem


class CloudSystem(GenerationSystem):
    """Just what the holds read: the current stage's name and representation."""

    def __init__(self, cloud: GaussianModel, stage: str) -> None:
        torch.nn.Module.__init__(self)
        self.cloud, self.stage_name = cloud, stage

    @property
    def stage(self):
        return SimpleNamespace(name=self.stage_name)

    @property
    def representation(self):
        return self.cloud
