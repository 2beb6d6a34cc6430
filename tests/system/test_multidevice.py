"""Multi-device training: DDP on CPU (gloo) with two real processes, each rank its own cameras."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from framework.cameras.datamodule import OrbitCameraDataModule
from framework.cameras.distribution import OrbitDistribution
from framework.utils.checkpoint_io import load_checkpoint_file
from tests.helpers import tiny_gaussian_overrides, tiny_overrides

ROOT = Path(__file__).resolve().parents[2]


def test_every_rank_draws_its_own_cameras_and_one_device_keeps_its_stream():
    module = OrbitCameraDataModule(OrbitDistribution(), batch_size=2, resolution=16, seed=3)
    rank0, rank1 = module.training_batch(5, 0, 2), module.training_batch(5, 1, 2)
    assert not torch.equal(rank0.c2w, rank1.c2w)
    single = module.training_batch(5)
    expected = OrbitDistribution().sample(2, 16, torch.Generator().manual_seed(3 * 1_000_003 + 5))
    assert torch.equal(single.c2w, expected.c2w)  # a one-device run draws what it always drew


def _launch(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "framework.launch", f"hydra.run.dir={run_dir}", *overrides]
    return subprocess.run(command, cwd=run_dir.parent, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_dreamfusion_trains_with_ddp_on_two_cpu_processes(tmp_path, tiny_pixel_prior):
    run_dir = tmp_path / "run"
    overrides = [o for o in tiny_overrides(run_dir, tiny_pixel_prior) if not o.startswith("run_dir=")]
    result = _launch(run_dir, "experiment=dreamfusion", "prompt=a red cube", *overrides, "trainer.devices=2", "trainer.strategy=ddp")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == str(run_dir)
    assert (run_dir / "train_ddp_process_1.log").is_file(), "a second process trained"
    state = load_checkpoint_file(run_dir / "ckpts/last.ckpt")
    assert state["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    assert (run_dir / "save/turntable.mp4").is_file() and (run_dir / "export/model.glb").is_file()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_dreamgaussian_trains_on_two_processes_with_identical_densification(tmp_path, tiny_pixel_prior):
    """Every step checks (in the system) that both processes hold the same Gaussians; a
    divergence would stop the run with an error."""
    run_dir = tmp_path / "run"
    overrides = [o for o in tiny_gaussian_overrides(run_dir, tiny_pixel_prior) if not o.startswith("run_dir=")]
    result = _launch(run_dir, "experiment=dreamgaussian", "prompt=a red cube", *overrides, "trainer.devices=2", "trainer.strategy=ddp_unwrapped")
    assert result.returncode == 0, result.stderr[-2000:]
    state = load_checkpoint_file(run_dir / "ckpts/last.ckpt")
    assert state["global_step"] == 6 and state["stage"] == "texture" and state["representation_shapes"]["main"]["n_gaussians"] != 256
    assert (run_dir / "export/gaussians.ply").is_file() and (run_dir / "export/model.glb").is_file()


@pytest.mark.slow
def test_dreamgaussian_refuses_wrapping_ddp_with_one_line(tmp_path, tiny_pixel_prior):
    result = _launch(tmp_path / "run", "experiment=dreamgaussian", "prompt=a red cube", f"guidance.pretrained={tiny_pixel_prior}", "logger=csv", "trainer.devices=2", "trainer.strategy=ddp")
    assert result.returncode == 2
    assert "(densification or a stage switch), which DDP's gradient hooks cannot follow: use trainer.strategy=ddp_unwrapped" in result.stderr.strip().splitlines()[-1]
