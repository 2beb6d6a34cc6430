"""Write the run's exports when training (or a feed-forward prediction) ends, on rank 0, and log
the GLB to wandb."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pytorch_lightning as pl

from framework.export.exporters import Exporter
from framework.system import GenerationSystem


class Export(pl.Callback):
    """Args:
    exporters: name -> exporter (`framework/export/exporters.py`), each writing files of one
        representation into the run's `export/`.
    """

    def __init__(self, exporters: Mapping[str, Exporter]) -> None:
        self.exporters = dict(exporters)

    def _export(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        assert isinstance(pl_module, GenerationSystem)
        written: list[Path] = []
        for exporter in self.exporters.values():
            written += exporter(pl_module)
        for logger in trainer.loggers:
            if isinstance(logger, pl.loggers.WandbLogger):
                import wandb

                for path in written:
                    if path.suffix == ".glb":
                        logger.experiment.log({"model": wandb.Object3D(str(path))}, step=trainer.global_step)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._export(trainer, pl_module)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._export(trainer, pl_module)
