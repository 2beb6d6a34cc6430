"""The progress bar: step, loss, steps/s (tqdm's rate) and the current stage."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar


class StageProgressBar(TQDMProgressBar):
    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        metrics["step"] = trainer.global_step
        stage = getattr(pl_module, "stage", None)
        metrics["stage"] = getattr(stage, "name", "main")
        return metrics
