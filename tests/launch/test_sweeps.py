"""Sweeps on Hydra's launchers (sequential, joblib, submitit's local executor), failure isolation,
per-run records, the sweep report and wandb runs that survive a resume."""

from __future__ import annotations

import csv
import html.parser
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import open_dict

from framework.launch import job_device, run, slugify
from framework.utils.run_record import RunRecord, read_record
from framework.utils.sweep_summary import summarize
from tests.helpers import CONF_DIR, compose_config, tiny_overrides

ROOT = Path(__file__).resolve().parents[2]
LONG_PROMPT = "x" * 400


# --- helpers ----------------------------------------------------------------------------------------
def _sweep_overrides(prior: Path, *, wandb: bool = False) -> list[str]:
    """The tiny test run as sweep overrides: Hydra picks each job's run directory."""
    dropped = ("run_dir=",) + (("logger=",) if wandb else ())
    return [o for o in tiny_overrides(Path("unused"), prior) if not o.startswith(dropped)]


def _launch_sweep(sweep_dir: Path, prior: Path, *overrides: str, wandb: bool = False, timeout: int = 240, on_start=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HYDRA_FULL_ERROR="0", WANDB_MODE="offline", WANDB_SILENT="true", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "framework.launch", "-m", "experiment=dreamfusion", *overrides, *_sweep_overrides(prior, wandb=wandb), f"hydra.sweep.dir={sweep_dir}"]
    process = subprocess.Popen(command, cwd=sweep_dir.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    watcher = threading.Thread(target=on_start, daemon=True) if on_start else None
    if watcher:
        watcher.start()
    stdout, stderr = process.communicate(timeout=timeout)
    if watcher:
        watcher.join(timeout=5)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _summary_rows(sweep_dir: Path) -> dict[str, dict[str, str]]:
    return {row["job"]: row for row in csv.DictReader(open(sweep_dir / "summary.csv", newline=""))}


class _Gallery(html.parser.HTMLParser):
    """The parts of index.html a reader relies on: job rows, videos, images, links."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self.videos: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if tag == "tr" and "job" in (attrs.get("class") or "").split():
            self.rows.append(attrs)
        elif tag == "video":
            self.videos.append(attrs["src"])
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "a":
            self.links.append(attrs["href"])


def _parse_gallery(text: str) -> _Gallery:
    gallery = _Gallery()
    gallery.feed(text)
    return gallery


def _assert_completed_job(job_dir: Path) -> dict:
    record = read_record(job_dir)
    assert record["status"] == "completed", record
    assert record["final_step"] == 4 and record["wall_seconds"] > 0 and record["end_time"] >= record["start_time"]
    assert {"export/model.glb", "save/turntable.mp4"} <= set(record["exports"])
    return record


@contextmanager
def _inside_multirun_job(sweep_dir: Path, num: int) -> Iterator[None]:
    """Hydra's view of the current job, as a launcher sets it up for job `num` of a sweep."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["prompt=a red cube"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.job.num = num
        cfg.hydra.sweep.dir = str(sweep_dir)
    HydraConfig.instance().set_config(cfg)
    try:
        yield
    finally:
        HydraConfig.instance().cfg = None


# --- sweeps through the real entry point ------------------------------------------------------------
@pytest.mark.slow
def test_sequential_sweep_gives_every_job_its_run_dir_record_wandb_run_and_a_report(tmp_path, tiny_pixel_prior):
    sweep_dir = tmp_path / "sweep"
    result = _launch_sweep(sweep_dir, tiny_pixel_prior, "prompt=a red cube,a blue torus", "guidance.guidance_scale=20,50", "seed=0", wandb=True)
    assert result.returncode == 0, result.stderr[-3000:]
    # Hydra numbers the jobs in override order; the folder name is fixed by the number and values.
    expected = [f"{n}-{slugify(p)}-seed0" for n, p in enumerate(["a red cube", "a red cube", "a blue torus", "a blue torus"])]
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) == expected
    ids = set()
    for name, scale in zip(expected, [20, 50, 20, 50]):
        record = _assert_completed_job(sweep_dir / name)
        assert f"guidance.guidance_scale={scale}" in record["overrides"]
        # Each job has a wandb run of its own (jobs share one process: the previous run was finished).
        assert list((sweep_dir / name / "wandb").glob(f"offline-run-*-{record['wandb_id']}")), name
        ids.add(record["wandb_id"])
    assert len(ids) == 4
    rows = _summary_rows(sweep_dir)
    assert list(rows) == expected
    for row in rows.values():
        assert row["status"] == "completed" and row["final_step"] == "4" and float(row["train/loss_main_sds"]) > 0
        assert "guidance.guidance_scale=" in row["sweep_values"] and "trainer.max_steps" not in row["sweep_values"]
    gallery = _parse_gallery((sweep_dir / "index.html").read_text())
    assert len(gallery.rows) == 4 and len(gallery.videos) == 4 and len(gallery.images) == 4
    for src in gallery.videos + gallery.images + [link for link in gallery.links if link.endswith(".glb")]:
        assert (sweep_dir / unquote(src)).is_file(), src


@pytest.mark.slow
def test_a_failing_job_is_recorded_and_the_next_jobs_still_run(tmp_path, tiny_pixel_prior):
    sweep_dir = tmp_path / "sweep"
    result = _launch_sweep(sweep_dir, tiny_pixel_prior, f"prompt={LONG_PROMPT},a red cube")
    assert result.returncode == 0, result.stderr[-3000:]
    failed, completed = f"0-{slugify(LONG_PROMPT)}-seed0", "1-a-red-cube-seed0"
    assert "job 0 failed: prompt is 400 characters long" in result.stdout
    record = read_record(sweep_dir / failed)
    assert record["status"] == "failed" and record["error"] == "prompt is 400 characters long: at most 300 are allowed"
    _assert_completed_job(sweep_dir / completed)
    rows = _summary_rows(sweep_dir)
    assert rows[failed]["status"] == "failed" and "at most 300" in rows[failed]["error"]
    assert rows[completed]["status"] == "completed" and rows[completed]["error"] == ""


@pytest.mark.slow
def test_joblib_sweep_runs_jobs_in_parallel_worker_processes(tmp_path, tiny_pixel_prior):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep_dir = tmp_path / "sweep"
    result = _launch_sweep(sweep_dir, tiny_pixel_prior, "prompt=a red cube,a blue torus", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert result.returncode == 0, result.stderr[-3000:]
    records = [_assert_completed_job(sweep_dir / name) for name in ("0-a-red-cube-seed0", "1-a-blue-torus-seed0")]
    assert records[0]["pid"] != records[1]["pid"]  # two loky workers
    assert [row["status"] for row in _summary_rows(sweep_dir).values()] == ["completed", "completed"]
    assert len(_parse_gallery((sweep_dir / "index.html").read_text()).videos) == 2


@pytest.mark.slow
def test_submitit_local_sweep_requeues_a_preempted_job_into_its_own_run_dir(tmp_path, tiny_pixel_prior):
    """submitit's local executor stands in for SLURM: job 1 gets the pre-emption signal (USR2) as soon
    as it has started, is checkpointed and requeued by submitit, and runs again in the same folder."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep_dir = tmp_path / "sweep"
    preempted = sweep_dir / "1-a-blue-torus-seed0"
    sent: list[int] = []

    def preempt_job_1() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not sent:
            try:
                record = read_record(preempted)
            except ValueError:
                record = {}
            if record.get("status") == "running":
                os.kill(record["pid"], signal.SIGUSR2)
                sent.append(record["pid"])
            time.sleep(0.05)

    result = _launch_sweep(
        sweep_dir, tiny_pixel_prior, "prompt=a red cube,a blue torus", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", on_start=preempt_job_1
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sent, "job 1 never started"
    _assert_completed_job(sweep_dir / "0-a-red-cube-seed0")
    record = _assert_completed_job(preempted)
    assert record["attempt"] == 2 and record["pid"] != sent[0]  # a new process, the same run directory
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) == ["0-a-red-cube-seed0", "1-a-blue-torus-seed0"]
    assert [row["status"] for row in _summary_rows(sweep_dir).values()] == ["completed", "completed"]


@pytest.mark.slow
def test_a_single_run_refused_for_bad_input_exits_2_with_one_line_and_leaves_no_folder(tmp_path):
    """Unlike a sweep's job (whose folder keeps the failed record for the report, above)."""
    run_dir = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT), HYDRA_FULL_ERROR="0", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "framework.launch", f"prompt={LONG_PROMPT}", f"hydra.run.dir={run_dir}"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: prompt is 400 characters long: at most 300 are allowed"]
    assert not run_dir.exists()


# --- wandb --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_resumed_run_continues_its_wandb_run_in_the_sweeps_group(tmp_path, tiny_pixel_prior, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    finished: list[dict] = []
    real_finish = wandb.finish

    def finish(*args, **kwargs):
        finished.append({"id": wandb.run.id, "group": wandb.run.group, "config": dict(wandb.run.config)})
        real_finish(*args, **kwargs)

    monkeypatch.setattr(wandb, "finish", finish)

    def job(run_dir: Path, max_steps: int, resume: Path | None = None) -> RunRecord:
        overrides = ["experiment=dreamfusion", "prompt=a red cube", *tiny_overrides(run_dir, tiny_pixel_prior, max_steps)]
        overrides = [o for o in overrides if o != "logger=csv"] + ([f"resume={resume}"] if resume else [])
        record = RunRecord(run_dir, overrides[:2], resume)
        run(compose_config(overrides), record)
        record.finish("completed")
        return record

    with _inside_multirun_job(tmp_path / "sweep-0001", num=0):
        first = job(tmp_path / "first", 2)
        resumed = job(tmp_path / "resumed", 4, resume=tmp_path / "first/ckpts/last.ckpt")
    assert first.wandb_id == resumed.wandb_id == read_record(tmp_path / "resumed")["wandb_id"]
    assert [f["id"] for f in finished] == [first.wandb_id] * 2
    assert [f["group"] for f in finished] == ["sweep-0001"] * 2
    config = finished[1]["config"]
    assert config["overrides"] == ["experiment=dreamfusion", "prompt=a red cube"] and config["prompt"] == "a red cube"
    assert config["resume"] == str(tmp_path / "first/ckpts/last.ckpt")
    for run_dir in ("first", "resumed"):  # the offline files of both halves carry the one id, for `wandb sync`
        assert list((tmp_path / run_dir / "wandb").glob(f"offline-run-*-{first.wandb_id}")), run_dir
    # A requeued job starts again in its own folder and finds the id there.
    assert RunRecord(tmp_path / "first", []).wandb_id == first.wandb_id


# --- devices and launcher configs ---------------------------------------------------------------------
def test_the_launchers_come_with_the_first_install_command():
    """README's first command installs `.` (no extra): the launcher plugins its Sweeps section
    uses (joblib, slurm, slurm_local) must be dependencies of the package itself."""
    import tomllib

    first_command = (ROOT / "README.md").read_text().split("```bash\n", 1)[1].splitlines()[0]
    assert "pip install -e . " in first_command
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {dependency.split(">")[0].split("=")[0].split("<")[0].strip() for dependency in dependencies}
    assert {"hydra-joblib-launcher", "hydra-submitit-launcher"} <= names


def test_gpu_per_job_picks_the_gpu_from_the_job_number(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert job_device(cuda, True) == cuda  # a single run keeps the default device
    with _inside_multirun_job(tmp_path / "sweep", num=3):
        assert job_device(cuda, True) == torch.device("cuda", 1)
        assert job_device(cuda, False) == cuda and job_device(cpu, True) == cpu


@pytest.mark.parametrize(
    "launcher, target, values",
    [
        ("joblib", "JoblibLauncher", {}),
        ("submitit_local", "LocalLauncher", {}),
        ("slurm", "SlurmLauncher", {"gpus_per_node": 1, "timeout_min": 240, "max_num_timeout": 3, "signal_delay_s": 120}),
    ],
)
def test_launcher_configs_compose(launcher, target, values):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["prompt=a red cube", f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)
    assert {key: cfg.hydra.launcher[key] for key in values} == values
    assert cfg.hydra.callbacks.sweep_summary._target_ == "framework.utils.sweep_summary.SweepSummary"


# --- the report on a made-up sweep (fast) -------------------------------------------------------------
@pytest.fixture
def made_up_sweep(tmp_path: Path) -> Path:
    """Two jobs as launch leaves them: one completed (media, metrics, eval), one failed early."""
    sweep = tmp_path / "sweep 7"  # a space: links must be URL-quoted
    done, failed = sweep / "0-a-red-cube-seed0", sweep / "1-a-blue-torus-seed0"
    for job, status, error in ((done, "completed", None), (failed, "failed", "prompt is 400 characters long: <at most 300>")):
        (job / ".hydra").mkdir(parents=True)
        record = {"status": status, "error": error, "overrides": ["experiment=dreamfusion", f"prompt={job.name[2:-6]}", "seed=0"], "final_step": 4 if error is None else None, "wall_seconds": 12.5}
        (job / "run.json").write_text(json.dumps(record))
    (done / "save").mkdir()
    (done / "export").mkdir()
    for step in (2, 4):
        iio.imwrite(done / "save" / f"val_step{step:06d}.png", np.full((8, 8, 3), 40 * step, np.uint8))
    (done / "save" / "turntable.mp4").write_bytes(b"not decoded by the tests")
    (done / "export" / "model.glb").write_bytes(b"glTF")
    (done / "metrics.csv").write_text("epoch,step,train/loss,train/loss_sds,val/x\n0,0,3.0,2.0,\n0,1,1.5,,\n0,1,,1.0,7\n")
    (done / "eval.json").write_text(json.dumps({"prompt": "a red cube", "n_views": 8, "mask_iou_mean": 0.5, "color_error_mean": 0.1, "dominant_colour": "orange", "colour_right": False, "views": []}))
    (sweep / ".submitit" / "123").mkdir(parents=True)  # launcher files are not jobs
    return sweep


def test_report_has_one_row_per_job_with_losses_eval_and_status(made_up_sweep):
    csv_path, html_path, _ = summarize(made_up_sweep)
    rows = list(csv.DictReader(open(csv_path, newline="")))
    assert [row["job"] for row in rows] == ["0-a-red-cube-seed0", "1-a-blue-torus-seed0"]
    done, failed = rows
    assert (done["status"], done["train/loss"], done["train/loss_sds"], done["eval/mask_iou_mean"]) == ("completed", "1.5", "1.0", "0.5")
    assert (done["eval/dominant_colour"], done["eval/colour_right"]) == ("orange", "False")
    assert "eval/prompt" not in done and "eval/views" not in done
    assert done["sweep_values"] == "prompt=a-red-cube" and done["overrides"] == "experiment=dreamfusion prompt=a-red-cube seed=0"
    assert failed["status"] == "failed" and failed["error"].startswith("prompt is 400") and failed["train/loss"] == ""


def test_gallery_links_only_existing_files_by_relative_paths(made_up_sweep):
    _, html_path, _ = summarize(made_up_sweep)
    text = html_path.read_text()
    gallery = _parse_gallery(text)
    assert [row["id"] for row in gallery.rows] == ["0-a-red-cube-seed0", "1-a-blue-torus-seed0"]
    assert [row["class"] for row in gallery.rows] == ["job completed", "job failed"]
    assert gallery.videos == ["0-a-red-cube-seed0/save/turntable.mp4"]
    assert gallery.images == ["0-a-red-cube-seed0/save/val_step000004.png"]  # the latest still only
    assert "0-a-red-cube-seed0/export/model.glb" in gallery.links
    for src in gallery.videos + gallery.images + gallery.links:
        assert not src.startswith(("/", "file:", "http")) and (made_up_sweep / unquote(src)).is_file(), src
    assert "&lt;at most 300&gt;" in text  # the error is escaped, not markup


def test_summarize_script_writes_the_report_and_rejects_a_non_sweep(made_up_sweep, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("summarize_script", ROOT / "scripts" / "summarize.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main([str(made_up_sweep)])
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == [str(made_up_sweep.resolve() / "summary.csv"), str(made_up_sweep.resolve() / "index.html")]
    assert any("failed" in line and "prompt is 400" in line for line in out)
    (tmp_path / "empty").mkdir()
    for bad, message in ((tmp_path / "missing", "is not a directory"), (tmp_path / "empty", "holds no run directory")):
        with pytest.raises(SystemExit) as exit_info:
            script.main([str(bad)])
        assert exit_info.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and bad.name in lines[0] and message in lines[0], lines


def _browser() -> str | None:
    return next((path for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome") if (path := shutil.which(name))), None)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def test_gallery_loads_in_a_headless_browser(made_up_sweep, tmp_path):
    """Skipped without a browser on a workstation; in CI (`CI` set, as `.ci/run` does, which
    installs Debian's chromium) a missing browser is a failure, not a silent skip."""
    browser = _browser()
    if browser is None:
        message = "no chromium/chrome binary on PATH; install it with: apt-get install -y chromium"
        if _in_ci():
            pytest.fail(f"CI is set but {message} (.ci/run does)")
        pytest.skip(message)
    _, html_path, _ = summarize(made_up_sweep)
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", html_path.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = _parse_gallery(result.stdout)  # the DOM after the browser parsed the file from disk
    assert len(dom.rows) == 2 and dom.videos == ["0-a-red-cube-seed0/save/turntable.mp4"]
    assert dom.images == ["0-a-red-cube-seed0/save/val_step000004.png"]
