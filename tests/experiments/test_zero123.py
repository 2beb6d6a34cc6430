"""Image-to-3D: `experiment=zero123` and DreamGaussian's image mode, end to end at tiny sizes, with
the reference-view losses and an exact resume across every stage."""

from __future__ import annotations

import csv

import pytest
import torch

from framework.launch import apply_image_mode, build_system, run
from framework.losses.reference import ReferenceRgb
from framework.cameras.batch import Batch
from framework.utils.checkpoint_io import load_checkpoint_file
from tests.helpers import compose_config, tiny_dreamgaussian_image_overrides, tiny_zero123_overrides


def _zero123(tmp_path, prior, image, **overrides):
    extra = [f"{key}={value}" for key, value in overrides.items()]
    return run(compose_config([*tiny_zero123_overrides(tmp_path, prior, image), *extra]))


def test_the_image_mode_replaces_dreamgaussians_guidance_and_losses_only_with_an_image(tmp_path, tiny_pixel_prior, tiny_novel_view_prior, front_view_png):
    overrides = tiny_dreamgaussian_image_overrides(tmp_path, tiny_pixel_prior, tiny_novel_view_prior, front_view_png)
    cfg = compose_config(overrides)
    apply_image_mode(cfg)
    system, datamodule = build_system(cfg, torch.device("cpu"))
    assert type(system.slots["main"].guidance).__name__ == "NovelViewGuidance"
    assert set(system.losses) == {"reference_rgb", "reference_mask"}
    assert datamodule.reference is not None and float(datamodule.reference.cameras.elevation_deg[0]) == 15.0
    text = compose_config([o for o in overrides if not o.startswith(("image=", "image_to_3d."))] + ["prompt=a red cube"])
    apply_image_mode(text)
    assert text.guidance._target_.endswith("PixelDiffusionGuidance") and dict(text.loss.terms) == {}


def test_reference_losses_need_the_reference_render():
    with pytest.raises(ValueError, match="needs the reference image: pass image=<file>"):
        ReferenceRgb()({"rgb": torch.zeros(1, 4, 4, 3)}, Batch(cameras=None))  # type: ignore[arg-type]


@pytest.mark.slow
def test_tiny_zero123_run_fits_the_reference_view_and_exports(tmp_path, tiny_novel_view_prior, front_view_png):
    run_dir = _zero123(tmp_path, tiny_novel_view_prior, front_view_png)
    for relative in ("ckpts/last.ckpt", "export/model.glb", "export/model.obj", "save/turntable.mp4", "metrics.csv"):
        assert (run_dir / relative).is_file(), relative
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    for column in ("train/loss_main_sds", "train/loss_reference_rgb", "train/loss_reference_mask"):
        assert any(row.get(column) for row in rows), column


@pytest.mark.slow
def test_zero123_resume_matches_an_uninterrupted_run(tmp_path, tiny_novel_view_prior, front_view_png):
    straight = _zero123(tmp_path / "straight", tiny_novel_view_prior, front_view_png)
    _zero123(tmp_path / "stopped", tiny_novel_view_prior, front_view_png, **{"trainer.max_steps": 2})
    resumed = _zero123(tmp_path / "stopped", tiny_novel_view_prior, front_view_png, resume=tmp_path / "stopped/ckpts/last.ckpt")
    a, b = load_checkpoint_file(straight / "ckpts/last.ckpt"), load_checkpoint_file(resumed / "ckpts/last.ckpt")
    assert a["global_step"] == b["global_step"] == 4
    for key in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][key], a["state_dict"][key], rtol=0, atol=0, msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("stop_at", [3, 5], ids=["gaussians-stage", "texture-stage"])
def test_dreamgaussian_image_mode_resumes_exactly_in_each_stage(tmp_path, tiny_pixel_prior, tiny_novel_view_prior, front_view_png, stop_at):
    def go(run_dir, *extra):
        return run(compose_config([*tiny_dreamgaussian_image_overrides(run_dir, tiny_pixel_prior, tiny_novel_view_prior, front_view_png), *extra]))

    straight = go(tmp_path / "straight")
    go(tmp_path / "stopped", f"trainer.max_steps={stop_at}")
    resumed = go(tmp_path / "stopped", f"resume={tmp_path / 'stopped/ckpts/last.ckpt'}")
    a, b = load_checkpoint_file(straight / "ckpts/last.ckpt"), load_checkpoint_file(resumed / "ckpts/last.ckpt")
    assert a["stage"] == b["stage"] == "texture"
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][key], a["state_dict"][key], rtol=0, atol=0, msg=key)
    rows = list(csv.DictReader(open(straight / "metrics.csv")))
    assert any(row.get("train/loss_reference_rgb") for row in rows if float(row["step"]) >= 4), "the texture stage also fits the reference view"
