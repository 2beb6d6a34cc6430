"""Magic3D end to end at tiny sizes: the coarse NeRF, its density made a DMTet at the stage switch,
the fine stage on the mesh; both exports; exact resume on either side of the switch; a new run
started from a coarse run's checkpoint (init_from=)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch
import trimesh
from omegaconf import OmegaConf

from framework.cameras.batch import Batch
from framework.conversions.nerf_to_dmtet import NeRFToDMTet
from framework.launch import build_system, run
from framework.renderers.dmtet import DMTetRenderer
from framework.renderers.volume import VolumeRenderer
from framework.representations.dmtet import DMTet
from framework.representations.nerf import NeRFField
from framework.representations.point_prior_shape import PointPriorShape
from framework.schedules import as_scalar, value_at
from framework.utils.checkpoint_io import load_checkpoint_file
from tests.helpers import compose_config, tiny_magic3d_overrides

COARSE, FINE = 3, 3


def _overrides(run_dir: Path, prior: Path, max_steps: int | None = None, extra: tuple[str, ...] = ()) -> list[str]:
    overrides = ["experiment=magic3d", "prompt=a red cube", *tiny_magic3d_overrides(run_dir, prior, COARSE, FINE), *extra]
    return overrides + ([f"trainer.max_steps={max_steps}"] if max_steps is not None else [])


def _run(run_dir: Path, prior: Path, max_steps: int | None = None, *extra: str) -> Path:
    return run(compose_config(_overrides(run_dir, prior, max_steps, extra)))


def _assert_same_weights(a: dict, b: dict) -> None:
    assert (a["global_step"], a["stage"], a["representation_shapes"]) == (b["global_step"], b["stage"], b["representation_shapes"])
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=0, msg=key)


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, tiny_pixel_prior: Path) -> Path:
    """The uninterrupted run: 3 coarse + 3 fine steps, a checkpoint after each."""
    return _run(tmp_path_factory.mktemp("magic3d") / "straight", tiny_pixel_prior)


@pytest.fixture(scope="module")
def coarse_run(tmp_path_factory: pytest.TempPathFactory, tiny_pixel_prior: Path) -> tuple[Path, Path, list[str]]:
    """A run stopped where the coarse stage ends (max_steps=3), a copy of its last.ckpt and the
    files it exported (the resume test goes on in the run's folder)."""
    folder = tmp_path_factory.mktemp("magic3d_coarse")
    run_dir = _run(folder / "run", tiny_pixel_prior, COARSE)
    exported = sorted(str(path.relative_to(run_dir / "export")) for path in (run_dir / "export").rglob("*.glb"))
    return run_dir, Path(shutil.copy(run_dir / "ckpts/last.ckpt", folder / "coarse.ckpt")), exported


def _rows(run_dir: Path) -> list[dict[str, str]]:
    return [row for row in csv.DictReader(open(run_dir / "metrics.csv")) if row.get("train/loss")]


def test_magic3d_config_builds_a_nerf_stage_then_a_dmtet_stage(tmp_path, tiny_pixel_prior):
    """The coarse stage renders the NeRF by volume rendering, its density started from the bundled
    point prior's solid for the prompt; entering the fine stage converts its density into a DMTet
    coloured by a copy of the NeRF, rendered by the DMTet renderer, trained with the mesh
    regularisers under the fine learning-rate prefixes."""
    system, datamodule = build_system(compose_config(_overrides(tmp_path, tiny_pixel_prior)), torch.device("cpu"))
    assert [stage.name for stage in system.stages] == ["coarse", "fine"]
    assert isinstance(system.representation, NeRFField) and isinstance(system.renderers["main"], VolumeRenderer)
    assert isinstance(system.representation.shape, PointPriorShape)
    fine = system.stages[1]
    assert isinstance(fine.convert, NeRFToDMTet) and fine.convert.target == "dmtet" and fine.renderer == "dmtet"
    assert fine.losses == ["laplacian_smoothness", "normal_consistency", "sdf_sign_entropy"]
    system.enter_stage(1)
    dmtet = system.representations["dmtet"]
    assert system.representation is dmtet and isinstance(dmtet, DMTet) and dmtet.shape_state() == {"resolution": 8, "scale": 1.0}
    assert isinstance(system.renderers["dmtet"], DMTetRenderer)
    assert isinstance(dmtet.colour, NeRFField) and dmtet.colour is not system.representations["main"]
    assert set(system.stage_optimizers()) == {"representation", "representation.colour.encoding", "representation.colour"}  # the solid background has no parameters
    batch = Batch(datamodule.training_batch(COARSE))
    assert batch.cameras.height == 48
    render = system.render(batch.cameras, training=True)
    losses = system.compute_losses(render, batch, COARSE)
    assert {"loss_main_sds", "loss_normal_consistency", "loss_sdf_sign_entropy"} <= set(losses) and "loss_orientation" not in losses
    losses["loss"].backward()
    assert dmtet.vertex_sdf.grad.abs().sum() > 0 and dmtet.colour.encoding.planes.grad.abs().sum() > 0


def test_the_coarse_stage_keeps_dreamfusions_timesteps_and_the_fine_stage_gets_less_noise() -> None:
    """The defaults: t_max stays 0.98 through the coarse stage (DreamFusion's) and drops to 0.5
    at the switch; the render grows from 64 px to 128 px at the same step."""
    config = compose_config(["experiment=magic3d", "prompt=a red cube"])
    coarse = config.system.stages.coarse.steps
    t_max = as_scalar(OmegaConf.to_container(config.guidance.t_max, resolve=True))
    assert [value_at(t_max, step) for step in (0, coarse // 2, coarse - 1, coarse, coarse + 100)] == [0.98, 0.98, 0.98, 0.5, 0.5]
    assert OmegaConf.to_container(config.camera.resolution, resolve=True) == [[0, 64], [coarse, 128]]


@pytest.mark.slow
def test_tiny_magic3d_run_writes_every_output(straight):
    for relative in ("ckpts/last.ckpt", "save/turntable.mp4", "export/model.glb", "export/model.obj", "export/model.mtl", "export/model_albedo.png", "export/coarse/model.glb", "export/coarse/model.obj"):
        assert (straight / relative).is_file(), relative
    # The fine GLB is the DMTet's closed surface; its UV seams split vertices, so it is watertight
    # once they are merged (the coarse marching-cubes mesh has no UVs: watertight as loaded).
    fine = trimesh.load(straight / "export/model.glb", force="mesh")
    assert len(fine.faces) > 50
    fine.merge_vertices(merge_tex=True, merge_norm=True)
    assert fine.is_watertight and fine.volume > 0
    assert trimesh.load(straight / "export/coarse/model.glb", force="mesh").is_watertight
    state = load_checkpoint_file(straight / "ckpts/last.ckpt")
    assert state["global_step"] == COARSE + FINE and state["stage"] == "fine"
    assert state["representation_shapes"] == {"dmtet": {"resolution": 8, "scale": 1.0}}
    assert {"representations.main.encoding.planes", "representations.dmtet.vertex_sdf", "representations.dmtet.vertex_deformation", "representations.dmtet.colour.encoding.planes"} <= set(state["state_dict"])
    # The fine stage trains the DMTet only: the NeRF keeps its weights from the switch on.
    at_switch = load_checkpoint_file(straight / f"ckpts/step{COARSE:06d}.ckpt")
    assert at_switch["stage"] == "coarse" and "representations.dmtet.vertex_sdf" not in at_switch["state_dict"]
    for key, value in at_switch["state_dict"].items():
        if key.startswith("representations.main."):
            assert torch.equal(state["state_dict"][key], value), key
    after_one_fine_step = load_checkpoint_file(straight / f"ckpts/step{COARSE + 1:06d}.ckpt")["state_dict"]
    assert not torch.equal(after_one_fine_step["representations.dmtet.vertex_sdf"], state["state_dict"]["representations.dmtet.vertex_sdf"])
    # Each stage's loss is its own terms: SDS and the orientation loss, then SDS and the mesh
    # regularisers. (A term a stage no longer computes keeps its last value in later rows of
    # metrics.csv, Lightning's step cache: the totals tell which terms were in the loss.)
    weights = compose_config(_overrides(straight, Path("unused"))).loss.weights
    rows = _rows(straight)
    assert [int(row["step"]) for row in rows] == list(range(COARSE + FINE))
    for row in rows:
        step = int(row["step"])
        value = {name: float(row.get(f"train/loss_{name}") or "nan") for name in ("main_sds", "orientation", "normal_consistency", "sdf_sign_entropy")}
        if step < COARSE:
            expected = value["main_sds"] + value_at(as_scalar(weights.orientation), step) * value["orientation"]
            assert not row.get("train/loss_normal_consistency") and float(row["train/resolution"]) == 32
        else:
            expected = value["main_sds"] + weights.normal_consistency * value["normal_consistency"] + weights.sdf_sign_entropy * value["sdf_sign_entropy"]
            assert float(row["train/resolution"]) == 48
        assert float(row["train/loss"]) == pytest.approx(expected, rel=1e-5), step


@pytest.mark.slow
def test_resume_on_either_side_of_the_stage_switch_matches_an_uninterrupted_run(coarse_run, straight, tiny_pixel_prior):
    """The coarse run's folder resumed to step 4 (from the coarse checkpoint at the switch: the
    conversion runs on resume) and then to the end (from a fine checkpoint: the DMTet is rebuilt
    from its shape and the NeRF, then loaded): bit-identical to the uninterrupted run each time."""
    run_dir, _, _ = coarse_run
    _assert_same_weights(load_checkpoint_file(run_dir / "ckpts/last.ckpt"), load_checkpoint_file(straight / f"ckpts/step{COARSE:06d}.ckpt"))
    _run(run_dir, tiny_pixel_prior, COARSE + 1, f"resume={run_dir / 'ckpts/last.ckpt'}")
    _assert_same_weights(load_checkpoint_file(run_dir / "ckpts/last.ckpt"), load_checkpoint_file(straight / f"ckpts/step{COARSE + 1:06d}.ckpt"))
    _run(run_dir, tiny_pixel_prior, None, f"resume={run_dir / 'ckpts/last.ckpt'}")
    final, expected = load_checkpoint_file(run_dir / "ckpts/last.ckpt"), load_checkpoint_file(straight / "ckpts/last.ckpt")
    _assert_same_weights(final, expected)
    assert final["optimizer_states"][0].keys() == expected["optimizer_states"][0].keys()
    assert [int(row["step"]) for row in _rows(run_dir)] == list(range(COARSE + FINE))


@pytest.mark.slow
def test_init_from_a_coarse_run_starts_the_fine_stage_in_a_new_run(tmp_path, coarse_run, straight, tiny_pixel_prior):
    """One coarse result, refined in a new run folder: it starts at the coarse run's last step,
    runs only the fine stage and ends like the uninterrupted run."""
    _, coarse_checkpoint, coarse_exports = coarse_run
    assert load_checkpoint_file(coarse_checkpoint)["stage"] == "coarse"
    assert coarse_exports == ["coarse/model.glb", "model.glb"]  # the DMTet made from the NeRF for its export
    second = _run(tmp_path / "second", tiny_pixel_prior, None, f"init_from={coarse_checkpoint}")
    _assert_same_weights(load_checkpoint_file(second / "ckpts/last.ckpt"), load_checkpoint_file(straight / "ckpts/last.ckpt"))
    rows = _rows(second)
    assert [int(row["step"]) for row in rows] == list(range(COARSE, COARSE + FINE))
    assert all(row.get("train/loss_normal_consistency") and not row.get("train/loss_orientation") for row in rows)
    assert (second / "export/model.glb").is_file() and not (second / f"ckpts/step{COARSE:06d}.ckpt").exists()


@pytest.mark.slow
def test_two_priors_a_pixel_prior_for_the_coarse_nerf_and_a_latent_one_for_the_mesh(tmp_path, tiny_pixel_prior, tiny_latent_prior):
    """Magic3D's own pairing (DeepFloyd IF / eDiff-I on the NeRF, Stable Diffusion on the mesh) as
    README gives it: a second slot `fine`, each stage naming the slot it uses. Each slot logs in
    its own stage only."""
    extra = (
        "+guidance@guidance_slots.fine=stable_diffusion",
        f"guidance_slots.fine.pretrained={tiny_latent_prior}",
        "guidance_slots.fine.resolution=32",
        "guidance_slots.fine.embedding_cache_dir=null",
        "+system.stages.coarse.slots={main:{}}",
        "+system.stages.fine.slots={fine:{}}",
    )
    run_dir = _run(tmp_path, tiny_pixel_prior, None, *extra)
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    coarse, fine = rows[:COARSE], rows[COARSE:]
    assert len(fine) == FINE
    assert all(row["train/loss_main_sds"] and not row.get("train/loss_fine_sds") for row in coarse)
    assert all(row["train/loss_fine_sds"] and not row.get("train/loss_main_sds") for row in fine)
    assert (run_dir / "export/model.glb").is_file()
