"""RUN_DIR/run.json: what a run was asked to do and how it ended.

A sweep report has to tell completed, failed and still-running (or killed) jobs apart without
parsing logs, and a resumed or requeued run has to find its wandb run id again; both read this
file. It is rewritten atomically at each change, so a reader never sees half a record.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from framework.utils.atomic import atomic_path

RECORD_NAME = "run.json"
EXPORT_PATTERNS = ("export/*.glb", "export/*.ply", "save/turntable.mp4")


def read_record(run_dir: str | os.PathLike) -> dict[str, Any]:
    """RUN_DIR/run.json as a dict; {} when the run has none (started before records, or never)."""
    path = Path(run_dir) / RECORD_NAME
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable run record: {error}") from error
    if not isinstance(record, dict):
        raise ValueError(f"{path} is not a run record: expected a JSON object, got {type(record).__name__}")
    return record


def sweep_group() -> str | None:
    """The sweep folder's name inside a multirun (one wandb group per sweep); None for a single run
    or outside a Hydra app (configs composed in tests)."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    return Path(hydra_cfg.sweep.dir).name if hydra_cfg.mode == RunMode.MULTIRUN else None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunRecord(pl.Callback):
    """Keeps RUN_DIR/run.json: `running` from the start, then `completed`, `failed` (with the
    error's one line) or `interrupted`, the wall time, the last training step and the exports that exist.

    It is also a Lightning callback so that a run that fails mid-training still records how far it got.
    The wandb run id is kept across resumes: it comes from this run directory's earlier record
    (a requeued job), else from the record of the run that wrote the `resume` checkpoint
    (`<run>/ckpts/last.ckpt`), else it is new. `identity` (`run_dirs.run_identity`) records the
    run's experiment, prompt and seed beside its overrides.
    """

    def __init__(
        self, run_dir: str | os.PathLike, overrides: list[str], resume: str | os.PathLike | None = None, identity: Mapping[str, Any] | None = None
    ) -> None:
        self.run_dir = Path(run_dir)
        previous = read_record(self.run_dir)
        resumed = read_record(Path(resume).parent.parent) if resume else {}
        self.wandb_id: str = previous.get("wandb_id") or resumed.get("wandb_id") or uuid.uuid4().hex[:8]
        self.final_step: int | None = previous.get("final_step")
        # What the run is (a later start in this folder must be the same run: run_dirs.check_run_dir).
        what = {key: identity[key] for key in ("experiment", "prompt", "seed") if key in identity} if identity else {}
        self.data: dict[str, Any] = {
            **what,
            "status": "running",
            "error": None,
            "overrides": list(overrides),
            "resume": str(resume) if resume else None,
            "attempt": int(previous.get("attempt", 0)) + 1,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "start_time": _now(),
            "end_time": None,
            "wall_seconds": None,
            "final_step": self.final_step,
            "exports": [],
            "wandb_id": self.wandb_id,
        }
        self._started = time.monotonic()
        self._write()

    def run_config(self, cfg: DictConfig) -> dict[str, Any]:
        """What the loggers get as the run's config: the composed config, resolved, and the overrides."""
        return {"overrides": self.data["overrides"], **OmegaConf.to_container(cfg, resolve=True)}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.final_step = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.final_step = trainer.global_step

    def finish(self, status: str, error: str | None = None) -> None:
        """Record the outcome: `completed`; `failed` with the error's line; `interrupted` (Ctrl-C, or
        a pre-emption signal after which submitit requeues the job)."""
        if status not in ("completed", "failed", "interrupted"):
            raise ValueError(f"status={status!r}: expected completed, failed or interrupted")
        self.data.update(
            status=status,
            error=error,
            end_time=_now(),
            wall_seconds=round(time.monotonic() - self._started, 3),
            final_step=self.final_step,
            exports=sorted(str(p.relative_to(self.run_dir)) for pattern in EXPORT_PATTERNS for p in self.run_dir.glob(pattern)),
        )
        self._write()
        # End this run's wandb run (WandbLogger never does): the next job of a sequential sweep runs
        # in the same process and would otherwise log into it. wandb is only imported if it was used.
        wandb = sys.modules.get("wandb")
        if wandb is not None and wandb.run is not None:
            wandb.finish(exit_code=0 if status == "completed" else 1)

    @rank_zero_only  # one writer when Lightning runs the script once per rank (DDP)
    def _write(self) -> None:
        with atomic_path(self.run_dir / RECORD_NAME) as tmp:
            tmp.write_text(json.dumps(self.data, indent=2) + "\n")
