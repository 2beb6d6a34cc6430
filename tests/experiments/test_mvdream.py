"""`experiment=mvdream` end to end at tiny sizes: 4-view sets every step, the point prior's start,
and an exact resume."""

from __future__ import annotations

import pytest
import torch

from framework.launch import build_system, run
from framework.representations.point_prior_shape import PointPriorShape
from framework.utils.checkpoint_io import load_checkpoint_file
from tests.helpers import compose_config, tiny_overrides


def _overrides(run_dir, prior, max_steps: int = 4) -> list[str]:
    return ["experiment=mvdream", "prompt=a green mug", *tiny_overrides(run_dir, prior, max_steps)]


def test_each_step_renders_one_view_set_per_batch_entry_from_the_point_priors_shape(tmp_path, tiny_multi_view_prior, sphere_point_prior):
    cfg = compose_config([*_overrides(tmp_path, tiny_multi_view_prior), "camera.batch_size=2"])
    system, datamodule = build_system(cfg, torch.device("cpu"))
    assert isinstance(system.representation.shape, PointPriorShape)
    assert [(prompts, seed) for prompts, seed, _, _ in sphere_point_prior] == [(["a green mug"], 0)]
    cameras = datamodule.training_batch(0)
    assert datamodule.views_per_group == 4 and cameras.batch_size == 8
    torch.testing.assert_close(cameras.azimuth_deg.view(2, 4).diff(dim=1) % 360.0, torch.full((2, 3), 90.0))
    plain = compose_config(["experiment=dreamfusion", *tiny_overrides(tmp_path, tiny_multi_view_prior)])
    assert plain.camera.views_per_group == 1


@pytest.mark.slow
def test_tiny_mvdream_run_resumes_exactly(tmp_path, tiny_multi_view_prior, sphere_point_prior):
    straight = run(compose_config(_overrides(tmp_path / "straight", tiny_multi_view_prior)))
    assert (straight / "export/model.glb").is_file()
    run(compose_config(_overrides(tmp_path / "stopped", tiny_multi_view_prior, max_steps=2)))
    resumed = run(compose_config([*_overrides(tmp_path / "stopped", tiny_multi_view_prior), f"resume={tmp_path / 'stopped/ckpts/last.ckpt'}"]))
    a, b = load_checkpoint_file(straight / "ckpts/last.ckpt"), load_checkpoint_file(resumed / "ckpts/last.ckpt")
    assert a["global_step"] == b["global_step"] == 4
    for key in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][key], a["state_dict"][key], rtol=0, atol=0, msg=key)


def test_dreamgaussian_takes_the_multi_view_guidance_in_view_sets(tmp_path, tiny_pixel_prior, tiny_multi_view_prior):
    cfg = compose_config(["experiment=dreamgaussian", "prompt=a green mug", f"run_dir={tmp_path}", "guidance=bundled_mv", f"guidance.pretrained={tiny_multi_view_prior}", "guidance.embedding_cache_dir=null", "logger=csv"])
    system, datamodule = build_system(cfg, torch.device("cpu"))
    assert type(system.slots["main"].guidance).__name__ == "MultiViewPixelGuidance"
    assert datamodule.training_batch(0).batch_size == 2 * 4  # two view sets a step
