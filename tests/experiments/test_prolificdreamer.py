"""ProlificDreamer end to end at tiny sizes: a NeRF started from the point prior's shape under VSD,
the DMTet's geometry under SDS, its colour under VSD; the LoRA and camera embedding train in the VSD
stages only and are checkpointed; resume is bit-exact across both stage switches."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from framework.cameras.batch import Batch
from framework.guidance.estimators.sds import ScoreDistillationSampling
from framework.guidance.estimators.vsd import VariationalScoreDistillation
from framework.launch import build_system, run
from framework.representations.particles import Particles
from framework.utils.checkpoint_io import load_checkpoint_file
from tests.helpers import compose_config, tiny_run_settings

NERF, GEOMETRY, TEXTURE = 2, 2, 2


def _overrides(run_dir: Path, prior: Path, max_steps: int | None = None) -> list[str]:
    overrides = [
        "experiment=prolificdreamer",
        "prompt=a red cube",
        f"run_dir={run_dir}",
        f"guidance.pretrained={prior}",
        "guidance.embedding_cache_dir=null",
        *tiny_run_settings(),
        f"system.stages.nerf.steps={NERF}",
        f"system.stages.geometry.steps={GEOMETRY}",
        f"system.stages.texture.steps={TEXTURE}",
        "particles.count=2",
        f"camera.resolution=[[0,32],[{NERF},48]]",
        "renderer.n_samples=16",
        "renderer.occupancy.resolution=16",
        "renderer.occupancy.update_every=2",
        "representation.encoding.resolution=16",
        "representation.encoding.channels=4",
        "system.stages.geometry.convert.density_threshold=1.0",
        "system.stages.geometry.convert.grid_resolution=32",
        "system.stages.geometry.convert.fit_steps=100",
        "system.stages.geometry.convert.dmtet.resolution=8",
        "callbacks.export.exporters.coarse.resolution=32",
        "++callbacks.export.exporters.mesh.texture_size=64",
    ]
    return overrides + ([f"trainer.max_steps={max_steps}"] if max_steps is not None else [])


def _rows(run_dir: Path) -> list[dict[str, str]]:
    return [row for row in csv.DictReader(open(run_dir / "metrics.csv")) if row.get("train/loss")]


def test_each_stage_has_its_estimator_and_trains_its_own_parameters(tmp_path, tiny_pixel_prior, sphere_point_prior):
    system, datamodule = build_system(compose_config(_overrides(tmp_path, tiny_pixel_prior)), torch.device("cpu"))
    assert [stage.name for stage in system.stages] == ["nerf", "geometry", "texture"]
    batch = Batch(datamodule.training_batch(0))
    expected = (
        (VariationalScoreDistillation, {"representation.encoding", "representation", "guidance.main.lora", "guidance.main.camera_embedding"}),
        (ScoreDistillationSampling, {"representation"}),
        (VariationalScoreDistillation, {"representation.colour.encoding", "representation.colour", "guidance.main.lora", "guidance.main.camera_embedding"}),
    )
    used = []
    for index, (estimator, optimizers) in enumerate(expected):
        system.enter_stage(index)
        used.append(system.active_slots()["main"].estimator)
        assert isinstance(used[-1], estimator)
        assert set(system.stage_optimizers()) == optimizers
        losses = system.compute_losses(system.render(batch.cameras, training=True), batch, 0)
        assert ("loss_main_lora" in losses) == (estimator is VariationalScoreDistillation)
    assert used[0] is used[2]  # one LoRA for both VSD stages


def test_particles_share_the_camera_batch_and_the_mesh_stages_refine_the_first(tmp_path, tiny_pixel_prior, sphere_point_prior):
    overrides = [*_overrides(tmp_path, tiny_pixel_prior), "particles.count=3", "particles.per_step=2", "camera.batch_size=2"]
    system, datamodule = build_system(compose_config(overrides), torch.device("cpu"))
    particles = system.representation
    assert isinstance(particles, Particles) and len(particles.members) == 3
    # Every particle starts from the one sample of the point prior (conftest: a sphere of radius 0.5).
    assert sphere_point_prior == [(["a red cube"], 0, 64, 1.0)]
    inside, outside = torch.tensor([[0.0, 0.0, 0.2]]), torch.tensor([[0.0, 0.0, 0.7]])
    for member in particles.members:
        assert member.shape is not None and member._blob(inside) > 0 > member._blob(outside)
    assert set(system.stage_optimizers()) == {"representation.encoding", "representation", "guidance.main.lora", "guidance.main.camera_embedding"}
    batch = Batch(datamodule.training_batch(0))
    render = system.render(batch.cameras, training=True)
    assert render["rgb"].shape[0] == 2
    system.compute_losses(render, batch, 0)["loss"].backward()
    drawn = particles.drawn(0)
    for index, member in enumerate(particles.members):
        touched = any(p.grad is not None and p.grad.abs().sum() > 0 for p in member.parameters())
        assert touched == (index in drawn), index
    system.enter_stage(1)
    assert type(system.representation).__name__ == "DMTet"


@pytest.mark.slow
def test_tiny_prolificdreamer_run_resumes_exactly_across_both_switches(tmp_path, tiny_pixel_prior, sphere_point_prior):
    """With two particles (one a step), so the draw of each step is resumed too."""
    straight = run(compose_config(_overrides(tmp_path / "straight", tiny_pixel_prior)))
    assert (straight / "export/model.glb").is_file() and (straight / "export/coarse/model.glb").is_file()
    rows = _rows(straight)
    assert [bool(row.get("train/loss_main_vsd")) for row in rows] == [True] * NERF + [False] * GEOMETRY + [True] * TEXTURE
    assert all(row["train/loss_main_sds"] for row in rows[NERF : NERF + GEOMETRY])
    expected = load_checkpoint_file(straight / "ckpts/last.ckpt")
    assert expected["stage"] == "texture" and any(key.startswith("guidance_parts.main.lora.") for key in expected["state_dict"])
    assert any(key.startswith("representations.main.members.1.") for key in expected["state_dict"])
    assert {"representations.main.members.0.shape.values", "representations.main.members.1.shape.values"} <= expected["state_dict"].keys()
    for stop in (NERF + 1, NERF + GEOMETRY + 1):
        stopped = tmp_path / f"stopped_{stop}"
        run(compose_config(_overrides(stopped, tiny_pixel_prior, stop)))
        run(compose_config([*_overrides(stopped, tiny_pixel_prior), f"resume={stopped / 'ckpts/last.ckpt'}"]))
        resumed = load_checkpoint_file(stopped / "ckpts/last.ckpt")
        assert resumed["state_dict"].keys() == expected["state_dict"].keys()
        for key, value in expected["state_dict"].items():
            torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=0, msg=f"stop {stop}: {key}")


def test_vsd_runs_on_a_stable_diffusion_shaped_prior_at_the_papers_cfg(tmp_path, tiny_pixel_prior, tiny_latent_prior):
    """guidance=stable_diffusion: the LoRA and camera embedding sit on SD's UNet (VAE latents); the
    NeRF starts from the paper's ball (`representation.shape=null`)."""
    overrides = _overrides(tmp_path, tiny_pixel_prior) + [
        "guidance=stable_diffusion", f"guidance.pretrained={tiny_latent_prior}", "guidance.resolution=32", "guidance.guidance_scale=7.5", "representation.shape=null"
    ]
    system, datamodule = build_system(compose_config(overrides), torch.device("cpu"))
    assert system.representation.shape is None
    assert isinstance(system.active_slots()["main"].estimator, VariationalScoreDistillation)
    batch = Batch(datamodule.training_batch(0))
    losses = system.compute_losses(system.render(batch.cameras, training=True), batch, 0)
    losses["loss"].backward()
    lora = system.guidance_parts["main"]["lora"]
    assert torch.isfinite(losses["loss_main_vsd"]) and any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora.parameters())
