"""The one stage switch: at each stage boundary, run the entered stage's conversion and rebuild the
optimisers (`GenerationSystem.enter_stage`). Boundaries are fixed steps, so a run resumed from any
checkpoint switches at the same step as an uninterrupted one."""

from __future__ import annotations

import pytorch_lightning as pl

from framework.system import GenerationSystem


class StageSwitch(pl.Callback):
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: object, batch_idx: int) -> None:
        assert isinstance(pl_module, GenerationSystem)
        target = pl_module.stage_index_at(trainer.global_step)
        while pl_module.stage_index < target:
            pl_module.enter_stage(pl_module.stage_index + 1)
