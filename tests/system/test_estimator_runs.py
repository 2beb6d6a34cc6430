"""Estimators chosen on the command line, through the real entry point: VSD's trainable parts in
the checkpoint (and nothing of the frozen prior), and its resume, bit-exact."""

from __future__ import annotations

import csv

import pytest
import torch
from diffusers import UNet2DConditionModel

from framework.launch import run
from framework.utils.checkpoint_io import load_checkpoint_file
from tests.helpers import compose_config, tiny_overrides


def _dreamfusion(run_dir, prior, max_steps: int, *extra: str) -> list[str]:
    return ["experiment=dreamfusion", "prompt=a blue sphere", *tiny_overrides(run_dir, prior, max_steps), *extra]


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["ism", "csd", "nfsd"])
def test_a_dreamfusion_run_takes_any_estimator_from_the_command_line(estimator, tmp_path, tiny_pixel_prior):
    run_dir = run(compose_config(_dreamfusion(tmp_path, tiny_pixel_prior, 2, f"guidance.estimator={estimator}")))
    rows = [row for row in csv.DictReader(open(run_dir / "metrics.csv")) if row.get("train/loss")]
    assert rows and all(row[f"train/loss_main_{estimator}"] and not row.get("train/loss_main_sds") for row in rows)


@pytest.mark.slow
def test_vsd_checkpoints_only_its_lora_and_camera_embedding_and_resumes_exactly(tmp_path, tiny_pixel_prior):
    def final_state(run_dir, max_steps, resume=None):
        overrides = _dreamfusion(run_dir, tiny_pixel_prior, max_steps, "guidance.estimator=vsd")
        if resume:
            overrides.append(f"resume={resume}")
        run(compose_config(overrides))
        return load_checkpoint_file(run_dir / "ckpts/last.ckpt")

    straight = final_state(tmp_path / "straight", 6)
    guidance_keys = [key for key in straight["state_dict"] if key.startswith("guidance")]
    assert guidance_keys and all(key.startswith(("guidance_parts.main.lora.", "guidance_parts.main.camera_embedding.")) for key in guidance_keys)
    assert all("lora_A.default" in key or "lora_B.default" in key for key in guidance_keys if ".lora." in key)
    frozen = sum(p.numel() for p in UNet2DConditionModel.from_pretrained(tiny_pixel_prior, subfolder="unet").parameters())
    assert sum(straight["state_dict"][key].numel() for key in guidance_keys) < frozen / 4
    rows = [row for row in csv.DictReader(open(tmp_path / "straight/metrics.csv")) if row.get("train/loss")]
    assert all(row["train/loss_main_vsd"] and row["train/loss_main_lora"] for row in rows)

    final_state(tmp_path / "stopped", 2)
    resumed = final_state(tmp_path / "stopped", 6, resume=tmp_path / "stopped/ckpts/last.ckpt")
    assert straight["state_dict"].keys() == resumed["state_dict"].keys()
    for key, value in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=0, msg=key)
    # The LoRA really trained: its B matrices left zero.
    assert any(value.abs().sum() > 0 for key, value in straight["state_dict"].items() if "lora_B" in key)
