"""Fantasia3D end to end at tiny sizes: the DMTet's geometry from normal maps ("a normal map of
{prompt}"), then a PBR material on the frozen geometry; the metallic-roughness GLB; exact resume
on either side of the switch; with a latent prior, the normal map + mask as its latent first."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import pytest
import torch
import trimesh

from framework.cameras.batch import Batch
from framework.launch import build_system, run
from framework.renderers.dmtet import DMTetRenderer
from framework.representations.dmtet import DMTet
from framework.representations.pbr import PBRMaterial
from framework.schedules import as_scalar, value_at
from framework.utils.checkpoint_io import load_checkpoint_file
from tests.helpers import compose_config, tiny_fantasia3d_overrides

GEOMETRY, APPEARANCE = 3, 2


def _overrides(run_dir: Path, prior: Path, max_steps: int | None = None, extra: tuple[str, ...] = ()) -> list[str]:
    # The ellipsoid start: the default's point-prior sample costs half a minute a run on a CPU.
    overrides = ["experiment=fantasia3d", "prompt=a red cube", *tiny_fantasia3d_overrides(run_dir, prior, GEOMETRY, APPEARANCE), "representation.init=ellipsoid", *extra]
    return overrides + ([f"trainer.max_steps={max_steps}"] if max_steps is not None else [])


def _run(run_dir: Path, prior: Path, max_steps: int | None = None, *extra: str) -> Path:
    return run(compose_config(_overrides(run_dir, prior, max_steps, extra)))


def _assert_same_weights(a: dict, b: dict) -> None:
    assert (a["global_step"], a["stage"], a["representation_shapes"]) == (b["global_step"], b["stage"], b["representation_shapes"])
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=0, msg=key)


def _rows(run_dir: Path) -> list[dict[str, str]]:
    return [row for row in csv.DictReader(open(run_dir / "metrics.csv")) if row.get("train/loss")]


def _glb_json(path: Path) -> dict:
    """The JSON chunk of a binary glTF."""
    data = path.read_bytes()
    (length,) = struct.unpack("<I", data[12:16])
    return json.loads(data[20 : 20 + length])


def _weights(state: dict, prefix: str) -> dict[str, torch.Tensor]:
    return {key: value for key, value in state["state_dict"].items() if key.startswith(prefix)}


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, tiny_pixel_prior: Path) -> Path:
    """The uninterrupted run: 3 geometry + 2 appearance steps, a checkpoint after each."""
    return _run(tmp_path_factory.mktemp("fantasia3d") / "straight", tiny_pixel_prior)


def test_the_normal_latent_stage_runs_for_latent_priors_only(tmp_path, tiny_pixel_prior):
    """Its steps come from the prior's `latent` fact: 400 for Stable Diffusion, 0 for the bundled
    pixel prior (whose run then starts in the geometry stage)."""
    latent = compose_config(["experiment=fantasia3d", "prompt=a red cube", "guidance=stable_diffusion"])
    pixel = compose_config(["experiment=fantasia3d", "prompt=a red cube"])
    assert latent.system.stages.normal_latent.steps == 400 and pixel.system.stages.normal_latent.steps == 0
    for cfg in (latent, pixel):
        stages = cfg.system.stages
        assert cfg.trainer.max_steps == stages.normal_latent.steps + stages.geometry.steps + stages.appearance.steps
    system, _ = build_system(compose_config(_overrides(tmp_path, tiny_pixel_prior)), torch.device("cpu"))
    assert [stage.name for stage in system.stages] == ["normal_latent", "geometry", "appearance"]
    assert [system.stage_index_at(step) for step in (0, GEOMETRY - 1, GEOMETRY)] == [1, 1, 2]


def test_the_default_refines_the_point_priors_solid_gently():
    """The DMTet starts from the point prior's solid; the geometry stage runs at the base rates and
    timesteps up to 0.3, the appearance stage over the whole range, wherever the geometry stage
    starts (step 0 for pixel priors, after the normal-latent stage for latent ones)."""
    for extra in ([], ["guidance=stable_diffusion"]):
        config = compose_config(["experiment=fantasia3d", "prompt=a red cube", *extra])
        assert config.representation.init == "shape" and config.representation.init_shape._target_.endswith("PointPriorShape")
        stages = config.system.stages
        end = stages.normal_latent.steps + stages.geometry.steps
        assert dict(stages.geometry.learning_rates) == {"representation.encoding": 0.001, "representation": 0.0005, "material": None, "background": None}
        t_max = as_scalar([[step, value] for step, value in config.guidance.t_max])
        assert value_at(t_max, 0) == value_at(t_max, end - 1) == pytest.approx(0.3) and value_at(t_max, end + 1) == pytest.approx(0.98), extra


def test_fantasia3d_geometry_sees_normal_maps_and_appearance_trains_the_material_alone(tmp_path, tiny_pixel_prior, monkeypatch):
    """Geometry: the DMTet's normal map under "a normal map of a red cube", the mesh regularisers,
    the DMTet's parameters only. Appearance: the PBR render under the prompt, the material's
    parameters only (the geometry frozen by `representation: null`)."""
    system, datamodule = build_system(compose_config(_overrides(tmp_path, tiny_pixel_prior)), torch.device("cpu"))
    assert isinstance(system.representation, DMTet) and isinstance(system.materials["main"], PBRMaterial)
    assert isinstance(system.renderers["main"], DMTetRenderer)
    guidance = system.slots["main"].guidance
    seen = []
    real_call = type(guidance).__call__
    monkeypatch.setattr(type(guidance), "__call__", lambda self, images, condition, step, **options: seen.append((images, condition.text)) or real_call(self, images, condition, step, **options))
    batch = Batch(datamodule.training_batch(0))
    for index, expected_text, expected_optimizers in (
        (1, "a normal map of a red cube", {"representation.encoding", "representation"}),
        (2, "a red cube", {"material.encoding", "material"}),
    ):
        system.enter_stage(index)
        assert set(system.stage_optimizers()) == expected_optimizers
        render = system.render(batch.cameras, training=True)
        losses = system.compute_losses(render, batch, GEOMETRY if index == 2 else 0)
        images, text = seen[-1]
        assert text == expected_text
        assert torch.equal(images, render["normal_map"] if index == 1 else render["rgb"])
        assert ("loss_normal_consistency" in losses) == (index == 1)


@pytest.mark.slow
def test_tiny_fantasia3d_run_writes_every_output(straight):
    for relative in ("ckpts/last.ckpt", "save/turntable.mp4", "export/model.glb", "export/model.obj", "export/model.mtl", "export/model_basecolor.png", "export/model_roughness.png", "export/model_metallic.png"):
        assert (straight / relative).is_file(), relative
    (material,) = _glb_json(straight / "export/model.glb")["materials"]
    assert {"baseColorTexture", "metallicRoughnessTexture"} <= set(material["pbrMetallicRoughness"])
    # The DMTet's closed surface: watertight once the UV seams' split vertices are merged.
    mesh = trimesh.load(straight / "export/model.glb", force="mesh")
    assert len(mesh.faces) > 50
    mesh.merge_vertices(merge_tex=True, merge_norm=True)
    assert mesh.is_watertight and mesh.volume > 0
    state = load_checkpoint_file(straight / "ckpts/last.ckpt")
    assert state["global_step"] == GEOMETRY + APPEARANCE and state["stage"] == "appearance"
    assert state["representation_shapes"] == {"main": {"resolution": 8, "scale": 1.0}}
    # Geometry trains the DMTet with the material still; appearance the reverse.
    first, switch = load_checkpoint_file(straight / "ckpts/step000001.ckpt"), load_checkpoint_file(straight / f"ckpts/step{GEOMETRY:06d}.ckpt")
    assert switch["stage"] == "geometry"
    for earlier, later, still, moving in ((first, switch, "materials.main.", "representations.main."), (switch, state, "representations.main.", "materials.main.")):
        assert all(torch.equal(value, _weights(later, still)[key]) for key, value in _weights(earlier, still).items()), still
        assert not all(torch.equal(value, _weights(later, moving)[key]) for key, value in _weights(earlier, moving).items()), moving
    # Each stage's loss is its own terms, and each row of metrics.csv shows only its step's terms.
    weights = compose_config(_overrides(straight, Path("unused"))).loss.weights
    mesh_terms = [name for name in ("laplacian_smoothness", "normal_consistency", "sdf_sign_entropy") if weights[name] != 0]
    rows = _rows(straight)
    assert [int(row["step"]) for row in rows] == list(range(GEOMETRY + APPEARANCE)) and mesh_terms
    for row in rows:
        sds = float(row["train/loss_main_sds"])
        if int(row["step"]) < GEOMETRY:
            expected = sds + sum(weights[name] * float(row[f"train/loss_{name}"]) for name in mesh_terms)
        else:
            expected = sds
            assert not any(row.get(f"train/loss_{name}") for name in mesh_terms), row["step"]
        assert float(row["train/loss"]) == pytest.approx(expected, rel=1e-5), row["step"]


@pytest.mark.slow
def test_resume_on_either_side_of_the_stage_switch_matches_an_uninterrupted_run(tmp_path, straight, tiny_pixel_prior):
    """Stopped in the geometry stage, resumed into the appearance stage, stopped there and resumed
    to the end: bit-identical to the uninterrupted run at each stop."""
    run_dir = tmp_path / "stopped"
    for stop in (2, GEOMETRY + 1, None):
        _run(run_dir, tiny_pixel_prior, stop, *([f"resume={run_dir / 'ckpts/last.ckpt'}"] if stop != 2 else []))
        expected = straight / ("ckpts/last.ckpt" if stop is None else f"ckpts/step{stop:06d}.ckpt")
        _assert_same_weights(load_checkpoint_file(run_dir / "ckpts/last.ckpt"), load_checkpoint_file(expected))
    assert [int(row["step"]) for row in _rows(run_dir)] == list(range(GEOMETRY + APPEARANCE))


@pytest.mark.slow
def test_tiny_fantasia3d_run_with_a_latent_prior_starts_with_the_normal_latent_stage(tmp_path, tiny_latent_prior):
    """Stable Diffusion's shape with random weights: 2 steps on the normal map + mask as its
    latent (a 4-channel input the VAE could not take), then geometry and appearance."""
    overrides = _overrides(tmp_path, tiny_latent_prior, None, ("guidance=stable_diffusion", "guidance.resolution=32"))
    overrides += ["system.stages.normal_latent.steps=2", "system.stages.geometry.steps=1", "system.stages.appearance.steps=1"]
    cfg = compose_config(overrides)
    assert cfg.trainer.max_steps == 4
    run_dir = run(cfg)
    stages = [load_checkpoint_file(run_dir / f"ckpts/step{step:06d}.ckpt")["stage"] for step in range(1, 5)]
    assert stages == ["normal_latent", "normal_latent", "geometry", "appearance"]
    rows = _rows(run_dir)
    assert [int(row["step"]) for row in rows] == [0, 1, 2, 3] and all(row["train/loss_main_sds"] for row in rows)
    assert (run_dir / "export/model.glb").is_file()
