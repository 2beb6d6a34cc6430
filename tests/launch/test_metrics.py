"""metrics.csv: a row for every step from the first, on disk as soon as the step is logged (a
killed run keeps them), and at every exit."""

from __future__ import annotations

import csv
from pathlib import Path

import pytorch_lightning as pl

from framework.launch import run
from framework.utils.run_record import RunRecord
from tests.helpers import compose_config, tiny_overrides


def _steps(path: Path) -> list[int]:
    if not path.is_file():
        return []
    return [int(row["step"]) for row in csv.DictReader(open(path, newline="")) if row.get("train/loss")]


class _ReadWhileTraining(RunRecord):
    """The run's record (a callback of the run), reading metrics.csv from disk as each step starts,
    as someone watching (or a kill) would."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(run_dir, [])
        self.path = run_dir / "metrics.csv"
        self.seen: dict[int, list[int]] = {}

    def on_train_batch_start(self, trainer: pl.Trainer, *args) -> None:
        self.seen[trainer.global_step] = _steps(self.path)


def test_a_three_step_run_writes_a_row_for_every_step_as_it_goes(tmp_path, tiny_pixel_prior):
    """The default trainer and logger settings (not the tests' log_every_n_steps=1): before, a run
    of 3 steps wrote no row, a 25-step run steps 9 and 19 only, all at the end."""
    watcher = _ReadWhileTraining(tmp_path)
    overrides = [o for o in tiny_overrides(tmp_path, tiny_pixel_prior, max_steps=3) if not o.startswith("trainer.log_every_n_steps")]
    run(compose_config(["experiment=dreamfusion", "prompt=a red cube", *overrides]), watcher)
    assert _steps(tmp_path / "metrics.csv") == [0, 1, 2]
    assert watcher.seen == {0: [], 1: [0], 2: [0, 1]}
