"""The prior's training script: exact resume after an interruption, and its world's renders."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import train_prior  # noqa: E402


@pytest.mark.slow
def test_interrupted_training_resumes_exactly(tmp_path):
    common = ["--steps", "3", "--batch-size", "2", "--dataset-size", "16", "--warmup-steps", "1", "--checkpoint-minutes", "1000"]
    train_prior.main(["--work-dir", str(tmp_path / "straight"), "--export-dir", str(tmp_path / "straight/export"), *common])
    interrupted = ["--work-dir", str(tmp_path / "stopped"), "--export-dir", str(tmp_path / "stopped/export"), *common]
    train_prior.main([*interrupted, "--stop-at-step", "1"])
    assert not (tmp_path / "stopped/export").exists()
    train_prior.main(interrupted)
    straight = load_file(tmp_path / "straight/export/unet/diffusion_pytorch_model.safetensors")
    resumed = load_file(tmp_path / "stopped/export/unet/diffusion_pytorch_model.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
