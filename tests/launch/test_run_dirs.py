"""A run directory belongs to one run: default folders made at once (unique within a second), no
start in another run's folder, one last.ckpt a run, and a completed run continued is a no-op."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.utils import setup_globals
from omegaconf import OmegaConf

from framework.launch import run
from framework.utils.run_dirs import check_run_dir, discard_run_dir, run_identity, unique_run_dir
from framework.utils.run_record import read_record
from tests.helpers import CONF_DIR, compose_config, tiny_overrides

ROOT = Path(__file__).resolve().parents[2]
OVERRIDES = ["experiment=dreamfusion", "prompt=a red cube"]
IDENTITY = {"experiment": "dreamfusion", "prompt": "a red cube", "seed": 0, "overrides": sorted(OVERRIDES)}


# --- default folders --------------------------------------------------------------------------------
def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path):
    """Eight starts racing for one second's folder: eight folders, each made empty by one of them."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        made = list(pool.map(lambda _: unique_run_dir(str(tmp_path), "dreamfusion/a-red-cube/20260101-120000"), range(8)))
    base = tmp_path / "dreamfusion/a-red-cube/20260101-120000"
    assert sorted(made) == sorted([str(base)] + [f"{base}-{n}" for n in range(2, 9)])
    assert all(Path(path).is_dir() and not any(Path(path).iterdir()) for path in made)


def test_the_default_run_dir_is_made_once_per_start_even_in_the_same_second(tmp_path):
    """Two runs composed in the same second (the clock is fixed) resolve to two folders; one run
    resolving its folder again (Hydra does) keeps it. Hydra itself writes nothing into it."""
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            OmegaConf.register_new_resolver("now", lambda pattern: "20260101-120000", use_cache=True, replace=True)
            first, second = (compose(config_name="config", overrides=["prompt=a red cube", f"output_root={tmp_path}"], return_hydra_config=True) for _ in range(2))
        paths = [str(first.hydra.run.dir), str(second.hydra.run.dir)]
        assert str(first.hydra.run.dir) == paths[0]  # resolved once per run
    finally:
        setup_globals()  # Hydra's own `now`
    assert paths == [str(tmp_path / "dreamfusion/a-red-cube/20260101-120000"), str(tmp_path / "dreamfusion/a-red-cube/20260101-120000-2")]
    assert first.hydra.output_subdir is None  # launch writes .hydra/ once the folder is the run's
    discard_run_dir(paths[0])  # what a refused run does: its folder and the parents it made go
    assert Path(paths[1]).is_dir() and not Path(paths[0]).exists()


def test_an_unusable_output_root_is_named():
    with pytest.raises(ValueError, match=r"^output_root='/dev/null/x' cannot hold run folders: .*Not a directory"):
        unique_run_dir("/dev/null/x", "dreamfusion/a-red-cube/20260101-120000")


# --- whose folder ------------------------------------------------------------------------------------
def _record(run_dir: Path, **fields) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"experiment": "dreamfusion", "prompt": "a red cube", "seed": 0, "status": "completed", "overrides": OVERRIDES, "host": socket.gethostname(), "pid": 1}
    (run_dir / "run.json").write_text(json.dumps({**record, **fields}))


def test_a_folder_holding_another_run_is_refused_and_the_same_run_continues_only_with_resume(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "launch.log").touch()  # Hydra opens its job log before launch looks
    assert check_run_dir(tmp_path / "new", IDENTITY, continuing=False) == {} == check_run_dir(empty, IDENTITY, continuing=False)
    run_dir = tmp_path / "run"
    _record(run_dir, overrides=[*OVERRIDES, "resume=auto"])
    assert check_run_dir(run_dir, IDENTITY, continuing=True)["status"] == "completed"  # resume= is not part of what a run is
    with pytest.raises(ValueError, match=rf"^run directory '{run_dir}' already holds this run \(completed\): add resume=auto .* new hydra.run.dir"):
        check_run_dir(run_dir, IDENTITY, continuing=False)
    sphere = {**IDENTITY, "prompt": "a blue sphere", "seed": 3, "overrides": sorted(["experiment=dreamfusion", "prompt=a blue sphere", "seed=3"])}
    for identity in (sphere, {**IDENTITY, "overrides": sorted([*OVERRIDES, "seed=0"])}):
        with pytest.raises(ValueError, match=rf"^run directory '{run_dir}' holds another run \(dreamfusion, prompt='a red cube', seed=0.*resume=auto.*new hydra.run.dir"):
            check_run_dir(run_dir, identity, continuing=True)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not empty and holds no run record"):
        check_run_dir(foreign, IDENTITY, continuing=True)


def test_a_folder_a_live_process_runs_in_is_refused_even_to_the_same_run(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _record(tmp_path / "live", status="running", pid=sleeper.pid)
        with pytest.raises(ValueError, match=rf"is in use by a running process \(pid {sleeper.pid}\)"):
            check_run_dir(tmp_path / "live", IDENTITY, continuing=True)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert check_run_dir(tmp_path / "live", IDENTITY, continuing=True)["status"] == "running"  # killed: resume=auto continues it


def test_identity_leaves_out_resume(tmp_path):
    cfg = compose_config([*OVERRIDES, f"run_dir={tmp_path}"])
    assert run_identity(cfg, [*OVERRIDES, "resume=auto"]) == run_identity(cfg, list(reversed(OVERRIDES))) == IDENTITY


def test_a_run_started_again_in_its_own_folder_keeps_one_last_ckpt(tmp_path, tiny_pixel_prior):
    """A plain requeue starts a sweep job again in its folder: Lightning wrote last-v1.ckpt."""
    cfg = compose_config([*OVERRIDES, *tiny_overrides(tmp_path, tiny_pixel_prior, max_steps=2)])
    run(cfg)
    run(compose_config([*OVERRIDES, *tiny_overrides(tmp_path, tiny_pixel_prior, max_steps=2)]))
    assert sorted(p.name for p in (tmp_path / "ckpts").iterdir()) == ["last.ckpt", "step000002.ckpt"]


# --- through the entry point -------------------------------------------------------------------------
def _launch(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HYDRA_FULL_ERROR="0", OMP_NUM_THREADS="1", WANDB_MODE="offline", WANDB_SILENT="true")
    return subprocess.run([sys.executable, "-m", "framework.launch", *overrides], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def _fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_run_folder_belongs_to_one_run(tmp_path, tiny_pixel_prior):
    """A finished run's folder: another run started there is refused with one line and changes no
    file; the same command again is refused too; with resume=auto it has nothing to do, writes
    nothing and prints no "wrote"."""
    run_dir = tmp_path / "cube"
    command = [*OVERRIDES, *[o for o in tiny_overrides(run_dir, tiny_pixel_prior, max_steps=2) if not o.startswith("run_dir=")], f"hydra.run.dir={run_dir}"]
    first = _launch(*command, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    before = _fingerprint(run_dir)
    assert "run.json" in before and "ckpts/last.ckpt" in before and "metrics.csv" in before

    sphere = _launch(*command, "prompt=a blue sphere", "seed=3", cwd=tmp_path)
    assert sphere.returncode == 2 and sphere.stdout == ""
    assert sphere.stderr.strip().splitlines() == [
        f"error: run directory '{run_dir}' holds another run (dreamfusion, prompt='a red cube', seed=0): "
        "continue that one with its own command and resume=auto, or pick a new hydra.run.dir for this one"
    ]
    again = _launch(*command, cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.strip().splitlines() == [
        f"error: run directory '{run_dir}' already holds this run (completed): add resume=auto to continue it, or pick a new hydra.run.dir to start again"
    ]
    noop = _launch(*command, "resume=auto", cwd=tmp_path)
    assert noop.returncode == 0, noop.stderr[-3000:]
    assert noop.stdout.strip().splitlines() == ["nothing to do: this run already completed at step 2", str(run_dir)]
    assert _fingerprint(run_dir) == before  # the record (wall time, attempt) too
    assert read_record(run_dir)["attempt"] == 1
