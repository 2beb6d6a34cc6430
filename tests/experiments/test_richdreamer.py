"""RichDreamer end to end at tiny sizes: a DMTet started from the point prior's sample (a sphere's
points here: `sphere_point_prior`), its geometry under the normal-depth prior (its normal map and
depth map, 4 channels, in view sets of 4), then its PBR material under the albedo prior (the albedo
map) and the colour prior (the shaded render) at once; exact resume across the start and with the
two slots; checkpoints that hold no frozen prior."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from framework.cameras.batch import Batch
from framework.guidance.sds import ScoreDistillation
from framework.launch import build_system, run
from framework.utils.checkpoint_io import load_checkpoint_file
from tests.helpers import compose_config, tiny_richdreamer_overrides

GEOMETRY, APPEARANCE = 3, 2


def _overrides(run_dir: Path, priors: tuple[Path, Path, Path], max_steps: int | None = None) -> list[str]:
    overrides = ["experiment=richdreamer", "prompt=a red cube", *tiny_richdreamer_overrides(run_dir, *priors, GEOMETRY, APPEARANCE)]
    return overrides + ([f"trainer.max_steps={max_steps}"] if max_steps is not None else [])


@pytest.fixture
def priors(tiny_pixel_prior: Path, tiny_multi_view_prior: Path, tiny_normal_depth_prior: Path, sphere_point_prior: list) -> tuple[Path, Path, Path]:
    return tiny_pixel_prior, tiny_multi_view_prior, tiny_normal_depth_prior


def test_each_stage_shows_each_prior_its_own_channels(tmp_path, priors, monkeypatch):
    """Geometry: the normal-depth prior sees [normal_map, depth_map] of 4 views. Appearance: the
    albedo prior the albedo map, the colour prior the shaded render, both weighted into the loss."""
    system, datamodule = build_system(compose_config(_overrides(tmp_path, priors)), torch.device("cpu"))
    assert [stage.name for stage in system.stages] == ["start", "geometry", "appearance"]
    assert set(system.slots) == {"main", "albedo", "rgb"}
    assert system.slots["main"].guidance.unet.config.in_channels == 4
    names = {id(slot.guidance): name for name, slot in system.slots.items()}
    seen: dict[str, torch.Tensor] = {}
    real_call = ScoreDistillation.__call__
    monkeypatch.setattr(ScoreDistillation, "__call__", lambda self, images, condition, step, **options: seen.update({names[id(self)]: images}) or real_call(self, images, condition, step, **options))
    batch = Batch(datamodule.training_batch(0))
    assert batch.cameras.batch_size == 4
    for index, slots in ((1, {"main"}), (2, {"albedo", "rgb"})):
        system.enter_stage(index)
        seen.clear()
        render = system.render(batch.cameras, training=True)
        losses = system.compute_losses(render, batch, GEOMETRY if index == 2 else 0)
        assert set(seen) == slots
        assert {key for key in losses if key.endswith("_sds")} == {f"loss_{name}_sds" for name in slots}
    system.enter_stage(1)
    render = system.render(batch.cameras, training=True)
    assert torch.equal(system.slots["main"].inputs(render, system.representation), torch.cat([render["normal_map"], render["depth_map"]], dim=-1))
    assert torch.equal(system.slots["albedo"].inputs(render, system.representation), render["albedo_map"])


@pytest.fixture
def one_thread():
    """Torch on one CPU thread for the test. With two, two identical RichDreamer runs differ in the
    last bits from their second step (2026-12-06, not yet traced: some parallel CPU reduction of
    the 4-view DMTet step; one view of Fantasia3D at this size stays exact)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_tiny_richdreamer_run_resumes_exactly_with_two_slots_and_keeps_the_priors_out(tmp_path, priors, one_thread):
    """Stopped in the geometry stage and in the two-slot appearance stage, resumed each time: bit
    for bit the uninterrupted run. No checkpoint holds a prior's weights."""
    straight = run(compose_config(_overrides(tmp_path / "straight", priors)))
    assert (straight / "export/model.glb").is_file()
    stopped = tmp_path / "stopped"
    for stop in (2, GEOMETRY + 1, None):
        run(compose_config([*_overrides(stopped, priors, stop), *([f"resume={stopped / 'ckpts/last.ckpt'}"] if stop != 2 else [])]))
        a = load_checkpoint_file(stopped / "ckpts/last.ckpt")
        b = load_checkpoint_file(straight / ("ckpts/last.ckpt" if stop is None else f"ckpts/step{stop:06d}.ckpt"))
        assert (a["global_step"], a["stage"]) == (b["global_step"], b["stage"])
        assert a["state_dict"].keys() == b["state_dict"].keys()
        for key in a["state_dict"]:
            torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=0, msg=f"stop {stop}: {key}")
    state = load_checkpoint_file(straight / "ckpts/last.ckpt")
    assert state["stage"] == "appearance"
    assert not [key for key in state["state_dict"] if key.startswith("guidance") or "unet" in key or "text_encoder" in key]
    prior_bytes = sum(path.stat().st_size for prior in priors for path in prior.rglob("*.safetensors"))
    assert (straight / "ckpts/last.ckpt").stat().st_size < prior_bytes
    rows = [row for row in csv.DictReader(open(straight / "metrics.csv")) if row.get("train/loss")]
    assert [bool(row.get("train/loss_main_sds")) for row in rows] == [True] * GEOMETRY + [False] * APPEARANCE
    assert [bool(row.get("train/loss_albedo_sds")) and bool(row.get("train/loss_rgb_sds")) for row in rows] == [False] * GEOMETRY + [True] * APPEARANCE


def test_richdreamer_runs_on_its_own_checkpoints_and_stable_diffusion(tmp_path, tiny_latent_prior, tiny_richdreamer_checkpoints, sphere_point_prior):
    """The real layouts in the same stages: the normal-depth model on [normal_map, depth_map], the
    albedo model on [albedo_map, depth_map], Stable Diffusion on the shaded render; 2 steps each."""
    overrides = [
        "experiment=richdreamer",
        "prompt=a red cube",
        *tiny_richdreamer_overrides(tmp_path, tiny_latent_prior, tiny_latent_prior, tiny_latent_prior, geometry_steps=2, appearance_steps=2),
        "guidance=richdreamer_normal_depth",
        f"guidance.checkpoint={tiny_richdreamer_checkpoints['normal_depth']}",
        "guidance.negative_prompt=",
        "guidance.resolution=32",
        "guidance@guidance_slots.albedo=richdreamer_albedo",
        f"guidance_slots.albedo.checkpoint={tiny_richdreamer_checkpoints['albedo']}",
        f"guidance_slots.albedo.pretrained={tiny_latent_prior}",
        "guidance_slots.albedo.resolution=32",
        "guidance_slots.albedo.embedding_cache_dir=null",
        "guidance@guidance_slots.rgb=stable_diffusion",
        f"guidance_slots.rgb.pretrained={tiny_latent_prior}",
        "guidance_slots.rgb.resolution=32",
        "guidance_slots.rgb.embedding_cache_dir=null",
    ]
    cfg = compose_config(overrides)
    assert cfg.camera.resolution == 32  # the tiny overrides' (a latent prior's default: 128)
    run_dir = run(cfg)
    rows = [row for row in csv.DictReader(open(run_dir / "metrics.csv")) if row.get("train/loss")]
    assert [bool(row.get("train/loss_main_sds")) for row in rows] == [True, True, False, False]
    assert all(row.get("train/loss_albedo_sds") and row.get("train/loss_rgb_sds") for row in rows[2:])
    assert (run_dir / "export/model.glb").is_file()
    assert compose_config(["experiment=richdreamer", "prompt=a red cube", "guidance=richdreamer_normal_depth"]).camera.resolution == 128
