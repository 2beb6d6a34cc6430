"""Faults a run survives or reports in one line: SIGKILL then `resume=auto` (exactly), a requeued
job resuming its own checkpoint, NaN/Inf steps skipped (a guidance gone NaN included) and a NaN
streak stopped, out-of-memory named with the setting to lower, and pickled payloads refused."""

from __future__ import annotations

import csv
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import torch
from safetensors.torch import load_file, save_file

from framework.launch import error_line, resolve_resume, run
from framework.system import GenerationSystem
from framework.utils.checkpoint_io import load_checkpoint_file
from framework.utils.errors import RunStopped
from framework.utils.nonfinite import NonFiniteGuard, NonFiniteStepError
from hydra_plugins.resuming_submitit_launcher import requeue_overrides
from framework.utils.run_record import read_record
from tests.helpers import compose_config, tiny_fantasia3d_overrides, tiny_gaussian_overrides, tiny_magic3d_overrides, tiny_overrides

ROOT = Path(__file__).resolve().parents[2]
DREAMFUSION_STEPS = 16


# --- helpers ----------------------------------------------------------------------------------------
def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), HYDRA_FULL_ERROR="0", OMP_NUM_THREADS="1", WANDB_MODE="offline", WANDB_SILENT="true")


def _every_step(overrides: list[str]) -> list[str]:
    """Checkpoint after every step; Hydra picks the run directory (hydra.run.dir / the sweep)."""
    kept = [o for o in overrides if not o.startswith(("run_dir=", "callbacks.checkpoint.every_n_train_steps="))]
    return kept + ["callbacks.checkpoint.every_n_train_steps=1"]


def _dreamfusion_command(prior: Path) -> list[str]:
    return ["experiment=dreamfusion", "prompt=a red cube", *_every_step(tiny_overrides(Path("unused"), prior, DREAMFUSION_STEPS))]


def _dreamgaussian_command(prior: Path) -> list[str]:
    return ["experiment=dreamgaussian", "prompt=a red cube", *_every_step(tiny_gaussian_overrides(Path("unused"), prior, gaussian_steps=6, texture_steps=3))]


def _magic3d_command(prior: Path) -> list[str]:
    return ["experiment=magic3d", "prompt=a red cube", *_every_step(tiny_magic3d_overrides(Path("unused"), prior, coarse_steps=4, fine_steps=4))]


def _fantasia3d_command(prior: Path) -> list[str]:
    return ["experiment=fantasia3d", "prompt=a red cube", *_every_step(tiny_fantasia3d_overrides(Path("unused"), prior, geometry_steps=4, appearance_steps=3)), "representation.init=ellipsoid"]


def _start(arguments: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "framework.launch", *arguments], cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen, timeout: float = 300) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _wait_for(path: Path, process: subprocess.Popen | None = None, timeout: float = 240) -> bool:
    """Poll until `path` exists; False if the process ended first or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        if process is not None and process.poll() is not None:
            return path.exists()
        time.sleep(0.01)
    return False


def _assert_identical(a: Any, b: Any, where: str = "") -> None:
    """Bit-for-bit equality of nested checkpoint contents."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: {sorted(map(str, a))} != {sorted(map(str, b))}"
        for key in a:
            _assert_identical(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_identical(x, y, f"{where}/{i}")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _ckpt(run_dir: Path, step: int) -> dict:
    return load_checkpoint_file(run_dir / "ckpts" / f"step{step:06d}.ckpt")


def _trained(state_dict: dict) -> dict:
    """The trained weights: without the renderer's occupancy grid, which the renderer refreshes
    from the density on its own schedule whether or not a step was skipped."""
    return {key: value for key, value in state_dict.items() if not key.startswith("renderers.")}


def _moments(state: Any) -> Any:
    """Optimiser states without their learning rates, which follow the step's schedule whether or
    not the step was skipped."""
    if isinstance(state, dict):
        return {key: _moments(value) for key, value in state.items() if key != "lr"}
    if isinstance(state, (list, tuple)):
        return [_moments(value) for value in state]
    return state


# --- SIGKILL, then resume=auto in the same run directory -------------------------------------------
class _Straight:
    """The uninterrupted reference run, started in the background while a test kills its twin."""

    def __init__(self, arguments: list[str], run_dir: Path) -> None:
        self.run_dir = run_dir
        self.process = _start([*arguments, f"hydra.run.dir={run_dir}"], run_dir.parent)
        self._final: dict | None = None

    def final(self) -> dict:
        if self._final is None:
            result = _finish(self.process)
            assert result.returncode == 0, result.stderr[-3000:]
            self._final = load_checkpoint_file(self.run_dir / "ckpts" / "last.ckpt")
        return self._final

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


@pytest.fixture(scope="module")
def straight_dreamfusion(tmp_path_factory: pytest.TempPathFactory, tiny_pixel_prior: Path) -> Iterator[_Straight]:
    straight = _Straight(_dreamfusion_command(tiny_pixel_prior), tmp_path_factory.mktemp("straight") / "run")
    yield straight
    straight.close()


def _kill_and_resume(arguments: list[str], run_dir: Path, max_steps: int, kill_range: tuple[int, int], straight: Callable[[], dict]) -> None:
    """Run with resume=auto, SIGKILL it after the checkpoint of a random step in `kill_range`, run
    the same command again and compare its final checkpoint with the uninterrupted run's, bit for bit."""
    command = [*arguments, "resume=auto", f"hydra.run.dir={run_dir}"]
    kill_after = random.randint(*kill_range)
    process = _start(command, run_dir.parent)
    reached = _wait_for(run_dir / "ckpts" / f"step{kill_after:06d}.ckpt", process)
    process.send_signal(signal.SIGKILL)
    result = _finish(process)
    assert reached and result.returncode == -signal.SIGKILL, f"kill after step {kill_after}: {result.stderr[-3000:]}"
    killed_at = load_checkpoint_file(run_dir / "ckpts" / "last.ckpt")["global_step"]
    # step{N}.ckpt is written before last.ckpt: a kill in between leaves last.ckpt one step behind.
    assert kill_after - 1 <= killed_at < max_steps, f"killed after step {kill_after}, last.ckpt at {killed_at}"
    assert read_record(run_dir)["status"] == "running"  # SIGKILL leaves no chance to record anything

    resumed = _finish(_start(command, run_dir.parent))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = read_record(run_dir)
    assert record["status"] == "completed" and record["attempt"] == 2 and record["final_step"] == max_steps
    assert record["resume"] == str(run_dir / "ckpts" / "last.ckpt")
    final, reference = load_checkpoint_file(run_dir / "ckpts" / "last.ckpt"), straight()
    assert final["global_step"] == reference["global_step"] == max_steps
    _assert_identical(final["state_dict"], reference["state_dict"], f"state_dict (killed after step {killed_at})")
    _assert_identical(final["optimizer_states"], reference["optimizer_states"], f"optimizer (killed after step {killed_at})")


@pytest.mark.slow
def test_sigkilled_dreamfusion_run_resumes_with_resume_auto_exactly(tmp_path, tiny_pixel_prior, straight_dreamfusion):
    _kill_and_resume(_dreamfusion_command(tiny_pixel_prior), tmp_path / "run", DREAMFUSION_STEPS, (2, DREAMFUSION_STEPS - 4), straight_dreamfusion.final)


@pytest.mark.slow
def test_sigkilled_dreamgaussian_run_resumes_with_resume_auto_exactly(tmp_path, tiny_pixel_prior):
    """6 steps on Gaussians (densifying), the switch to the mesh, 3 texture steps: the kill comes
    after step 2..7, during densification or after the stage switch."""
    arguments = _dreamgaussian_command(tiny_pixel_prior)
    straight = _Straight(arguments, tmp_path / "straight")
    try:
        _kill_and_resume(arguments, tmp_path / "killed", 9, (2, 7), straight.final)
    finally:
        straight.close()



@pytest.mark.slow
def test_sigkilled_magic3d_run_resumes_with_resume_auto_exactly(tmp_path, tiny_pixel_prior):
    """4 coarse NeRF steps, the switch to the DMTet, 4 fine steps: the kill comes after step 2..6,
    in the coarse stage (the checkpoint at the switch included: the conversion runs on resume) or
    in the fine one (the DMTet is rebuilt from its checkpointed shape)."""
    arguments = _magic3d_command(tiny_pixel_prior)
    straight = _Straight(arguments, tmp_path / "straight")
    try:
        _kill_and_resume(arguments, tmp_path / "killed", 8, (2, 6), straight.final)
    finally:
        straight.close()


@pytest.mark.slow
def test_sigkilled_fantasia3d_run_resumes_with_resume_auto_exactly(tmp_path, tiny_pixel_prior):
    """4 geometry steps, then 3 appearance steps on the frozen geometry: the kill comes after step
    2..5, in either stage."""
    arguments = _fantasia3d_command(tiny_pixel_prior)
    straight = _Straight(arguments, tmp_path / "straight")
    try:
        _kill_and_resume(arguments, tmp_path / "killed", 7, (2, 5), straight.final)
    finally:
        straight.close()

def test_resume_auto_starts_fresh_without_a_checkpoint_and_requeue_adds_it(tmp_path):
    cfg = compose_config(["prompt=a red cube", f"run_dir={tmp_path}", "resume=auto"])
    assert resolve_resume(cfg) is None
    assert requeue_overrides(["prompt=a red cube", "resume=/other/run/ckpts/last.ckpt"], tmp_path) == ["prompt=a red cube", "resume=/other/run/ckpts/last.ckpt"]
    (tmp_path / "ckpts").mkdir()
    (tmp_path / "ckpts" / "last.ckpt").write_bytes(b"")
    assert resolve_resume(cfg) == str(tmp_path / "ckpts" / "last.ckpt")
    assert requeue_overrides(["prompt=a red cube", "resume=/other/run/ckpts/last.ckpt"], tmp_path) == ["prompt=a red cube", "resume=auto"]
    assert requeue_overrides(["seed=1"], tmp_path) == ["seed=1", "resume=auto"]


@pytest.mark.slow
def test_a_preempted_slurm_local_job_is_requeued_and_resumes_its_own_checkpoint(tmp_path, tiny_pixel_prior, straight_dreamfusion):
    """hydra/launcher=slurm_local (submitit's local executor, our resuming launcher): job 0 gets the
    pre-emption signal after a random step's checkpoint, is requeued, continues from that
    checkpoint and ends exactly like the uninterrupted run."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep_dir = tmp_path / "sweep"
    job_dir = sweep_dir / "0-a-red-cube-seed0"
    preempt_after = random.randint(2, DREAMFUSION_STEPS - 4)
    sent: list[int] = []

    def preempt() -> None:
        if _wait_for(job_dir / "ckpts" / f"step{preempt_after:06d}.ckpt"):
            pid = read_record(job_dir)["pid"]
            os.kill(pid, signal.SIGUSR2)
            sent.append(pid)

    watcher = threading.Thread(target=preempt, daemon=True)
    watcher.start()
    result = _finish(_start(["-m", *_dreamfusion_command(tiny_pixel_prior), "hydra/launcher=slurm_local", f"hydra.sweep.dir={sweep_dir}"], tmp_path), timeout=400)
    watcher.join(timeout=5)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sent, f"job 0 never reached step {preempt_after}"
    record = read_record(job_dir)
    assert record["status"] == "completed" and record["attempt"] == 2 and record["pid"] != sent[0]
    assert record["resume"] == str(job_dir / "ckpts" / "last.ckpt") and "resume=auto" in record["overrides"]
    final, reference = load_checkpoint_file(job_dir / "ckpts" / "last.ckpt"), straight_dreamfusion.final()
    _assert_identical(final["state_dict"], reference["state_dict"], f"state_dict (pre-empted after step {preempt_after})")


# --- NaN/Inf steps ------------------------------------------------------------------------------------
def test_guard_drops_a_non_finite_update_and_stops_after_max_bad_steps():
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([weight], lr=0.1)
    guard = NonFiniteGuard(max_bad_steps=2)

    def step(scale: float) -> bool:
        optimizer.zero_grad()
        loss = (weight * scale).sum()
        loss.backward()
        admitted = guard.admit(0, bool(torch.isfinite(loss)), [weight])
        optimizer.step()
        return admitted

    assert step(1.0)
    before = (weight.detach().clone(), {k: v.clone() for k, v in optimizer.state[weight].items()})
    assert not step(float("nan")) and weight.grad is None
    _assert_identical((weight.detach(), dict(optimizer.state[weight])), before)
    assert step(1.0) and guard.consecutive == 0 and guard.skipped_steps == 1
    assert not step(float("inf"))
    with pytest.raises(NonFiniteStepError, match=r"^step 0: .*NaN/Inf for 2 consecutive steps \(max_bad_steps=2\)"):
        step(float("nan"))
    with pytest.raises(ValueError, match="max_bad_steps=0"):
        NonFiniteGuard(0)


def _inject_nan(monkeypatch, system_class: type, nan_loss: set[int], nan_grad: set[int], from_step: int) -> None:
    """Training renders go bad at some steps: NaN values (loss and gradients NaN), or a term whose
    value is 0 but whose gradient is NaN (d sqrt(u)/du at u = 0), the kind a finite loss hides."""
    real = system_class.render

    def render(self, cameras, training):
        out = real(self, cameras, training)
        step = self.global_step
        if training and (step in nan_loss or step >= from_step):
            out["rgb"] = out["rgb"] * float("nan")
        elif training and step in nan_grad:
            out["rgb"] = out["rgb"] + torch.sqrt(((out["rgb"] - out["rgb"].detach()) ** 2).sum())
        return out

    monkeypatch.setattr(system_class, "render", render)


def _skipped_by_step(run_dir: Path) -> dict[int, float]:
    return {int(row["step"]): float(row["train/skipped_steps"]) for row in csv.DictReader(open(run_dir / "metrics.csv")) if row.get("train/skipped_steps")}


@pytest.mark.slow
def test_dreamfusion_skips_nan_steps_and_stops_after_max_bad_steps(tmp_path, tiny_pixel_prior, monkeypatch):
    """Step 2: NaN loss, step 3: finite loss with NaN gradients, both skipped; from step 6 on every
    step is bad, and with max_bad_steps=3 the run stops at step 8."""
    _inject_nan(monkeypatch, GenerationSystem, nan_loss={2}, nan_grad={3}, from_step=6)
    overrides = _every_step(tiny_overrides(tmp_path, tiny_pixel_prior, max_steps=12)) + [f"run_dir={tmp_path}", "max_bad_steps=3"]
    with pytest.raises(NonFiniteStepError) as stopped:
        run(compose_config(["experiment=dreamfusion", "prompt=a red cube", *overrides]))
    message = error_line(stopped.value)
    assert message == str(stopped.value) and message.startswith("step 8: ") and "3 consecutive steps (max_bad_steps=3)" in message
    # Skipped steps change neither the parameters nor Adam's moments or step count.
    _assert_identical(_trained(_ckpt(tmp_path, 4)["state_dict"]), _trained(_ckpt(tmp_path, 2)["state_dict"]), "state_dict 2 -> 4")
    _assert_identical(_moments(_ckpt(tmp_path, 4)["optimizer_states"]), _moments(_ckpt(tmp_path, 2)["optimizer_states"]), "optimizer 2 -> 4")
    assert not torch.equal(_ckpt(tmp_path, 5)["state_dict"]["representations.main.encoding.planes"], _ckpt(tmp_path, 4)["state_dict"]["representations.main.encoding.planes"])
    # The last checkpoint, written during the streak, holds the last good weights (after step 5).
    last = load_checkpoint_file(tmp_path / "ckpts" / "last.ckpt")
    assert last["global_step"] == 8 and last["nonfinite"] == {"skipped_steps": 4, "consecutive": 2}
    _assert_identical(_trained(last["state_dict"]), _trained(_ckpt(tmp_path, 6)["state_dict"]), "last.ckpt")
    assert all(torch.isfinite(value).all() for value in last["state_dict"].values())
    skipped = _skipped_by_step(tmp_path)
    assert (skipped[1], skipped[2], skipped[3], skipped[5], skipped[7]) == (0, 1, 2, 2, 4)


@pytest.mark.slow
def test_dreamgaussian_skips_nan_steps_in_both_stages_and_stops_after_max_bad_steps(tmp_path, tiny_pixel_prior, monkeypatch):
    """Gaussians stage: step 1 NaN loss, step 2 NaN gradients (a densification step: skipped too);
    texture stage (from step 4): bad from step 5 on, so with max_bad_steps=3 it stops at step 7."""
    _inject_nan(monkeypatch, GenerationSystem, nan_loss={1}, nan_grad={2}, from_step=5)
    overrides = tiny_gaussian_overrides(tmp_path, tiny_pixel_prior, gaussian_steps=4, texture_steps=4) + ["max_bad_steps=3"]
    with pytest.raises(NonFiniteStepError, match=r"^step 7: .*3 consecutive steps \(max_bad_steps=3\)"):
        run(compose_config(["experiment=dreamgaussian", "prompt=a red cube", *overrides]))
    before, after = _ckpt(tmp_path, 1), _ckpt(tmp_path, 3)
    assert before["representation_shapes"] == after["representation_shapes"]
    _assert_identical(after["state_dict"], before["state_dict"], "state_dict 1 -> 3")
    _assert_identical(_moments(after["optimizer_states"]), _moments(before["optimizer_states"]), "optimizer 1 -> 3")
    _assert_identical(after["densification"], before["densification"], "strategy 1 -> 3")
    assert not torch.equal(_ckpt(tmp_path, 4)["state_dict"]["representations.main.params.means"], after["state_dict"]["representations.main.params.means"])
    texture_before, last = _ckpt(tmp_path, 5), load_checkpoint_file(tmp_path / "ckpts" / "last.ckpt")
    assert texture_before["stage"] == last["stage"] == "texture" and last["global_step"] == 7
    _assert_identical(last["state_dict"], texture_before["state_dict"], "texture 5 -> last")
    _assert_identical(_moments(last["optimizer_states"]), _moments(texture_before["optimizer_states"]), "texture optimizer 5 -> last")
    skipped = _skipped_by_step(tmp_path)
    assert (skipped[0], skipped[1], skipped[2], skipped[4], skipped[6]) == (0, 1, 2, 2, 4)


def _nan_prior(prior: Path, folder: Path) -> Path:
    """A copy of `prior` whose UNet predicts NaN everywhere (its output bias is NaN): a guidance that
    goes bad at run time, like an fp16 overflow."""
    shutil.copytree(prior, folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    tensors["conv_out.bias"] = torch.full_like(tensors["conv_out.bias"], float("nan"))
    save_file(tensors, weights, metadata={"format": "pt"})
    return folder


def test_a_guidance_that_returns_nan_makes_a_bad_step_not_a_zero_step(tmp_path, tiny_pixel_prior):
    """The SDS gradient's NaN is not zeroed (before, nan_to_num turned it into a zero step: loss 0,
    the run "completed" untrained): the step is skipped and counted, and a streak stops the run."""
    overrides = tiny_overrides(tmp_path, _nan_prior(tiny_pixel_prior, tmp_path / "nan_prior"), max_steps=4) + ["max_bad_steps=2"]
    with pytest.raises(NonFiniteStepError, match=r"^step 1: .*NaN/Inf for 2 consecutive steps"):
        run(compose_config(["experiment=dreamfusion", "prompt=a red cube", *overrides]))
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [(row["step"], row["train/loss_main_sds"], row["train/skipped_steps"]) for row in rows if row.get("train/loss")] == [("0", "nan", "1.0")]


@pytest.mark.slow
def test_a_nan_streak_stops_the_cli_run_with_one_line(tmp_path, tiny_pixel_prior):
    """A prior whose every prediction is NaN makes every step bad: exit 1, the one line, the record
    says so. (A NaN setting, e.g. guidance.weight=nan, is refused before the run: test_settings.py.)"""
    run_dir = tmp_path / "run"
    prior = _nan_prior(tiny_pixel_prior, tmp_path / "nan_prior")
    arguments = _dreamfusion_command(prior) + ["max_bad_steps=2", f"hydra.run.dir={run_dir}"]
    result = _finish(_start(arguments, tmp_path))
    assert result.returncode == 1, result.stderr[-3000:]
    line = "error: step 1: the loss or its gradients were NaN/Inf for 2 consecutive steps (max_bad_steps=2); stopped, the last checkpoint holds the last good weights"
    assert result.stderr.strip().splitlines()[-1] == line and "Traceback" not in result.stderr
    assert read_record(run_dir)["status"] == "failed" and read_record(run_dir)["error"] == line.removeprefix("error: ")
    kept = load_checkpoint_file(run_dir / "ckpts" / "last.ckpt")["state_dict"]
    assert all(torch.isfinite(value).all() for value in kept.values())


# --- out of memory ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_out_of_memory_at_a_resolution_switch_names_the_setting_to_lower(tmp_path, tiny_pixel_prior, monkeypatch):
    real = GenerationSystem.render

    def render(self, cameras, training):
        if training and cameras.height == 48:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(self, cameras, training)

    monkeypatch.setattr(GenerationSystem, "render", render)
    overrides = tiny_overrides(tmp_path, tiny_pixel_prior, max_steps=4) + ["camera.resolution=[[0,32],[2,48]]"]
    with pytest.raises(RunStopped) as stopped:
        run(compose_config(["experiment=dreamfusion", "prompt=a red cube", *overrides]))
    assert error_line(stopped.value) == (
        "CUDA out of memory at step 2, training at resolution 48 with batch size 1: "
        "lower camera.resolution or camera.batch_size (each a number or [[step, value], ...])"
    )
    assert load_checkpoint_file(tmp_path / "ckpts" / "last.ckpt")["global_step"] == 2  # the work before it is kept
    resolutions = {int(row["step"]): float(row["train/resolution"]) for row in csv.DictReader(open(tmp_path / "metrics.csv")) if row.get("train/resolution")}
    assert resolutions == {0: 32, 1: 32}  # [[step, value], ...] switches in steps


# --- safe loading -------------------------------------------------------------------------------------
class _Payload:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_a_pickled_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"
    checkpoint = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hook": _Payload(marker)}, checkpoint)
    with pytest.raises(ValueError) as refused:
        load_checkpoint_file(checkpoint)
    assert str(refused.value) == (
        f"checkpoint {str(checkpoint)!r} was refused for safety: loading it would build posix.system, which can run code (only tensors and plain data are loaded)"
    )
    assert not marker.exists()
    # The payload is real: an unsafe load runs it.
    torch.load(checkpoint, weights_only=False)
    assert marker.exists()
