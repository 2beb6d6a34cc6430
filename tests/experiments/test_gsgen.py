"""GSGEN end to end at tiny sizes: Gaussians from the point prior's sample, the 2D and 3D slots in
the geometry stage, the 2D slot alone in the appearance stage, the exports, bit-exact resume across
the switch (the held size and turn included), and the 3D slot switched off by its weight."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from framework.callbacks.hold_cloud_size import rms_radius
from framework.callbacks.hold_cloud_turn import turn_about_z, wrap_turn
from framework.cameras.batch import Batch
from framework.launch import build_system, run
from framework.representations.gaussians import GaussianModel
from framework.utils.checkpoint_io import load_checkpoint_file
from tests.helpers import compose_config, tiny_run_settings

GEOMETRY, APPEARANCE = 3, 2


def _overrides(run_dir: Path, prior: Path, points: Path, max_steps: int | None = None) -> list[str]:
    overrides = [
        "experiment=gsgen",
        "prompt=a red cube",
        f"run_dir={run_dir}",
        f"guidance.pretrained={prior}",
        "guidance.embedding_cache_dir=null",
        *tiny_run_settings(),
        f"guidance_slots.points.pretrained={points}",
        "guidance_slots.points.n_points=32",
        "system.stages.geometry.convert.steps=4",
        f"system.stages.geometry.steps={GEOMETRY}",
        f"system.stages.appearance.steps={APPEARANCE}",
        "densification.refine_start_iter=1",
        "densification.refine_every=2",
        "densification.grow_grad2d=1e-7",
        "camera.resolution=32",
        "callbacks.hold_turn.min_strength=0",  # the tiny prior's cloud need not be square: hold it anyway
        "callbacks.export.exporters.mesh.convert.grid_resolution=32",
        "callbacks.export.exporters.mesh.convert.density_threshold=0.3",  # the untrained prior scatters its points through the whole ball
        "callbacks.export.exporters.mesh.convert.target_faces=500",
        "callbacks.export.exporters.mesh.convert.texture_size=64",
        "callbacks.export.exporters.mesh.convert.bake_resolution=32",
        "callbacks.export.exporters.mesh.convert.bake_views_per_ring=4",
    ]
    return overrides + ([f"trainer.max_steps={max_steps}"] if max_steps is not None else [])


def test_the_start_samples_the_point_prior_and_the_stages_pick_their_slots(tmp_path, tiny_pixel_prior, tiny_point_cloud_prior):
    system, datamodule = build_system(compose_config(_overrides(tmp_path, tiny_pixel_prior, tiny_point_cloud_prior)), torch.device("cpu"))
    assert [stage.name for stage in system.stages] == ["start", "geometry", "appearance"]
    assert system.stage_index_at(0) == 1  # the zero-step start is left at once
    system.enter_stage(1)
    gaussians = system.representation
    assert isinstance(gaussians, GaussianModel) and gaussians.num_gaussians == 64  # the tiny prior's n_ctx
    assert gaussians.means.abs().max() <= 1.0 + 1e-6  # its x0 bounds: the unit sphere doubled, halved back
    batch = Batch(datamodule.training_batch(0))
    losses = system.compute_losses(system.render(batch.cameras, training=True), batch, 0)
    assert {"loss_main_sds", "loss_points_sds"} <= set(losses)
    system.enter_stage(2)
    losses = system.compute_losses(system.render(batch.cameras, training=True), batch, GEOMETRY)
    assert "loss_main_sds" in losses and "loss_points_sds" not in losses


@pytest.mark.slow
def test_tiny_gsgen_run_exports_and_resumes_exactly(tmp_path, tiny_pixel_prior, tiny_point_cloud_prior):
    straight = run(compose_config(_overrides(tmp_path / "straight", tiny_pixel_prior, tiny_point_cloud_prior)))
    for relative in ("export/gaussians.ply", "export/model.glb", "ckpts/last.ckpt"):
        assert (straight / relative).is_file(), relative
    rows = [row for row in csv.DictReader(open(straight / "metrics.csv")) if row.get("train/loss")]
    assert [bool(row.get("train/loss_points_sds")) for row in rows] == [True] * GEOMETRY + [False] * APPEARANCE
    expected = load_checkpoint_file(straight / "ckpts/last.ckpt")
    held = [load_checkpoint_file(path)["state_dict"]["representations.gaussians.params.means"] for path in sorted((straight / "ckpts").glob("step*.ckpt"))]
    radii = [float(rms_radius(means)) for means in held]
    assert len(radii) == GEOMETRY + APPEARANCE and max(radii) - min(radii) < 1e-5 * radii[0]  # the size is held
    turns = [float(turn_about_z(means, 4)) for means in held]
    assert max(abs(wrap_turn(turn - turns[0], 4)) for turn in turns) < 1e-4  # and the turn
    stopped = tmp_path / "stopped"
    run(compose_config(_overrides(stopped, tiny_pixel_prior, tiny_point_cloud_prior, GEOMETRY - 1)))
    run(compose_config([*_overrides(stopped, tiny_pixel_prior, tiny_point_cloud_prior), f"resume={stopped / 'ckpts/last.ckpt'}"]))
    resumed = load_checkpoint_file(stopped / "ckpts/last.ckpt")
    assert resumed["representation_shapes"] == expected["representation_shapes"] and resumed["state_dict"].keys() == expected["state_dict"].keys()
    for key, value in expected["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=0, msg=key)
    # With the 3D slot's weight 0 the run differs from the one above: the 3D prior acted.
    off = run(compose_config([*_overrides(tmp_path / "off", tiny_pixel_prior, tiny_point_cloud_prior, GEOMETRY), "guidance_slots.points.weight=0"]))
    means = load_checkpoint_file(off / "ckpts/last.ckpt")["state_dict"]["representations.gaussians.params.means"]
    with_prior = load_checkpoint_file(stopped / "ckpts" / f"step{GEOMETRY:06d}.ckpt")["state_dict"]["representations.gaussians.params.means"]
    assert means.shape != with_prior.shape or not torch.equal(means, with_prior)
