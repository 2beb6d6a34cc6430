"""Config composition of every experiment, and tiny end-to-end runs through the real entry point."""

from __future__ import annotations

import csv

import pytest
import torch
from hydra.utils import instantiate

from framework.launch import build_system, run
from framework.utils.checkpoint_io import load_checkpoint_file
from tests.helpers import EXPERIMENTS, compose_config, tiny_overrides


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_builds(experiment, tmp_path, tiny_pixel_prior, tiny_novel_view_prior, tiny_multi_view_prior, tiny_normal_depth_prior, tiny_point_cloud_prior, front_view_png, sphere_point_prior):
    """Every `_target_` of the composed config is instantiated: the system with its stages,
    slots, conversions and losses, the camera datamodule, every callback and logger (the point
    prior's shapes drawn from a stand-in: the bundled prior's sample takes seconds)."""
    condition = {
        "zero123": [f"image={front_view_png}", f"guidance.pretrained={tiny_novel_view_prior}"],  # image-to-3D
        "mvdream": ["prompt=a red cube", f"guidance.pretrained={tiny_multi_view_prior}"],
        "gsgen": ["prompt=a red cube", f"guidance.pretrained={tiny_pixel_prior}", f"guidance_slots.points.pretrained={tiny_point_cloud_prior}"],
        "richdreamer": [
            "prompt=a red cube",
            f"guidance.pretrained={tiny_normal_depth_prior}",
            f"guidance_slots.albedo.pretrained={tiny_multi_view_prior}",
            f"guidance_slots.rgb.pretrained={tiny_pixel_prior}",
        ],
    }.get(experiment, ["prompt=a red cube", f"guidance.pretrained={tiny_pixel_prior}"])
    cfg = compose_config([f"experiment={experiment}", *condition, f"run_dir={tmp_path}", "guidance.embedding_cache_dir=null", "logger=csv"])
    system, datamodule = build_system(cfg, torch.device("cpu"))
    assert sum(stage.steps for stage in system.stages[:-1]) < cfg.trainer.max_steps
    slots = {"gsgen": {"main", "points"}, "richdreamer": {"main", "albedo", "rgb"}}.get(experiment, {"main"})
    assert system.save_dir == tmp_path / "save" and set(system.slots) == slots
    assert isinstance(datamodule.training_batch(0).c2w, torch.Tensor)
    for name, node in {**cfg.callbacks, **cfg.logger}.items():
        assert instantiate(node) is not None, name
    assert instantiate(cfg.trainer, logger=False).max_steps == cfg.trainer.max_steps


@pytest.mark.slow
def test_tiny_dreamfusion_run_writes_every_output(tmp_path, tiny_pixel_prior):
    cfg = compose_config(["experiment=dreamfusion", "prompt=a red cube", *tiny_overrides(tmp_path, tiny_pixel_prior)])
    run_dir = run(cfg)
    for relative in ("ckpts/last.ckpt", "save/turntable.mp4", "save/val_step000002.png", "export/model.glb", "export/model.obj", "metrics.csv"):
        assert (run_dir / relative).is_file(), relative
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert any(row.get("train/loss_main_sds") for row in rows)
    state = load_checkpoint_file(run_dir / "ckpts/last.ckpt")
    assert state["global_step"] == 4
    assert not any(key.startswith("guidance") for key in state["state_dict"])  # frozen prior stays out
    assert {"guidance.main", "materials.main", "renderers.main"} <= set(state["generators"])
    assert state["stage"] == "main"


@pytest.mark.slow
def test_tiny_latent_guidance_run(tmp_path, tiny_latent_prior):
    cfg = compose_config(
        ["experiment=dreamfusion", "prompt=a red cube", "guidance=stable_diffusion", "guidance.resolution=32", *tiny_overrides(tmp_path, tiny_latent_prior, max_steps=2)]
    )
    run_dir = run(cfg)
    assert (run_dir / "export/model.glb").is_file()


@pytest.mark.slow
def test_resume_matches_an_uninterrupted_run(tmp_path, tiny_pixel_prior):
    def final_parameters(run_dir, max_steps, resume=None):
        overrides = ["experiment=dreamfusion", "prompt=a blue sphere", *tiny_overrides(run_dir, tiny_pixel_prior, max_steps)]
        if resume:
            overrides.append(f"resume={resume}")
        run(compose_config(overrides))
        return load_checkpoint_file(run_dir / "ckpts/last.ckpt")["state_dict"]

    straight = final_parameters(tmp_path / "straight", 6)
    final_parameters(tmp_path / "stopped", 2)
    resumed = final_parameters(tmp_path / "stopped", 6, resume=tmp_path / "stopped/ckpts/last.ckpt")
    logged_steps = {int(row["step"]) for row in csv.DictReader(open(tmp_path / "stopped/metrics.csv")) if row.get("train/loss")}
    assert {0, 1, 4, 5} <= logged_steps  # the rows from before the stop survive the resume
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=key)
    # The run really moved: the parameters differ from a 2-step run.
    two_steps = final_parameters(tmp_path / "short", 2)
    assert not torch.equal(two_steps["representations.main.encoding.planes"], straight["representations.main.encoding.planes"])


@pytest.mark.slow
def test_init_from_starts_a_new_run_where_another_run_stopped(tmp_path, tiny_pixel_prior):
    """init_from= continues another run's checkpoint (weights, stage, step, optimisers) in a new
    run directory with this run's settings: the same parameters as running on in the first run."""
    first = run(compose_config(["experiment=dreamfusion", "prompt=a red cube", *tiny_overrides(tmp_path / "first", tiny_pixel_prior, 2)]))
    checkpoint = first / "ckpts/last.ckpt"
    straight = run(compose_config(["experiment=dreamfusion", "prompt=a red cube", *tiny_overrides(tmp_path / "straight", tiny_pixel_prior, 4)]))
    second = run(compose_config(["experiment=dreamfusion", "prompt=a red cube", f"init_from={checkpoint}", *tiny_overrides(tmp_path / "second", tiny_pixel_prior, 4)]))
    forked, expected = load_checkpoint_file(second / "ckpts/last.ckpt"), load_checkpoint_file(straight / "ckpts/last.ckpt")
    assert forked["global_step"] == 4 and load_checkpoint_file(checkpoint)["global_step"] == 2
    for key, value in expected["state_dict"].items():
        torch.testing.assert_close(forked["state_dict"][key], value, rtol=0, atol=0, msg=key)
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated"):
        run(compose_config(["experiment=dreamfusion", "prompt=a red cube", f"init_from={broken}", *tiny_overrides(tmp_path / "third", tiny_pixel_prior)]))
    with pytest.raises(ValueError, match="stopped at step 2 and trainer.max_steps=2: nothing is left to train"):
        run(compose_config(["experiment=dreamfusion", "prompt=a red cube", f"init_from={checkpoint}", *tiny_overrides(tmp_path / "fourth", tiny_pixel_prior, 2)]))
