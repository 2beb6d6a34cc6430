"""DreamGaussian end to end at tiny sizes: both stages, exports, and exact resume with a changing
number of Gaussians and across the stage switch."""

from __future__ import annotations

import csv

import pytest
import torch
from plyfile import PlyData

from experiments.dreamgaussian import DenoisedTarget
from framework.guidance.denoising import denoise
from framework.cameras.batch import Batch
from framework.cameras.distribution import OrbitDistribution
from framework.conversions.gaussians_to_mesh import GaussiansToTexturedMesh
from framework.guidance.condition import Condition
from framework.guidance.pixel import PixelDiffusionGuidance
from framework.launch import build_system, run
from framework.optimizers import OptimizerGroup
from framework.representations.gaussians import GaussianModel
from framework.representations.lights import CameraLight
from framework.representations.materials import LitMaterial
from framework.representations.textured_mesh import TexturedMesh
from framework.utils.checkpoint_io import load_checkpoint_file
from tests.helpers import compose_config, tiny_gaussian_overrides


def test_optimizer_group_steps_every_member_and_round_trips():
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    group = OptimizerGroup({"a": torch.optim.Adam([a], lr=0.1), "b": torch.optim.Adam([b], lr=0.2)})
    (a.sum() + 2 * b.sum()).backward()
    group.step()
    assert (a < 1).all() and (b < 1).all()
    assert len(group.param_groups) == 2 and set(group.state) == {a, b}
    state = group.state_dict()
    fresh = OptimizerGroup({"a": torch.optim.Adam([a], lr=0.1), "b": torch.optim.Adam([b], lr=0.2)})
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.state[a]["exp_avg"], group.state[a]["exp_avg"])
    with pytest.raises(ValueError, match=r"\['a'\].*\['a', 'b'\]"):
        fresh.load_state_dict({"a": state["a"]})


def test_denoised_target_fits_the_render_to_its_denoising(tiny_pixel_prior):
    """The texture stage's slot estimator: MSE between the render and `denoise` of it (same
    draws from the guidance's generator), with gradients to the render only."""
    guidance = PixelDiffusionGuidance(str(tiny_pixel_prior), guidance_scale=5.0, embedding_cache_dir=None, device="cpu", seed=4)
    condition = Condition(OrbitDistribution().sample(2, 32, torch.Generator().manual_seed(0)), text="a red cube")
    rgb = torch.rand(2, 32, 32, 3, requires_grad=True)
    estimator = DenoisedTarget(strength=[[0, 0.6], [10, 0.2]], n_steps=2, guidance_scale=1.5)
    state = guidance.generator.get_state()
    out = estimator(guidance, rgb, condition, step=10)
    guidance.generator.set_state(state)
    target = denoise(guidance, rgb.detach(), condition, strength=0.2, n_steps=2, guidance_scale=1.5)
    assert set(out) == {"loss_refine", "refine_strength"}
    assert out["refine_strength"].item() == pytest.approx(0.2)  # the schedule at step 10
    torch.testing.assert_close(out["loss_refine"], torch.nn.functional.mse_loss(rgb.detach(), target))
    out["loss_refine"].backward()
    torch.testing.assert_close(rgb.grad, 2 * (rgb.detach() - target) / rgb.numel())


def test_dreamgaussian_config_declares_two_stages_and_enters_the_texture_stage(tmp_path, tiny_pixel_prior):
    """DreamGaussian is configs on the base system: stage "gaussians" (SDS, densified) then
    "texture", entered by converting the Gaussians into a textured mesh baked under the prior's
    light; the texture stage renders the mesh lit by that light and swaps SDS for the denoised
    target."""
    cfg = compose_config(["experiment=dreamgaussian", "prompt=a red cube", *tiny_gaussian_overrides(tmp_path, tiny_pixel_prior)])
    system, datamodule = build_system(cfg, torch.device("cpu"))
    assert [stage.name for stage in system.stages] == ["gaussians", "texture"]
    gaussians_stage, texture_stage = system.stages
    assert gaussians_stage.steps == 4 and gaussians_stage.densification is not None and gaussians_stage.convert is None
    assert isinstance(texture_stage.convert, GaussiansToTexturedMesh) and texture_stage.convert.target == "mesh"
    assert isinstance(texture_stage.convert.light, CameraLight)
    estimator = texture_stage.slots["main"]["estimator"]
    assert isinstance(estimator, DenoisedTarget) and estimator.n_steps == 2
    assert isinstance(system.materials["mesh"], LitMaterial) and isinstance(system.materials["mesh"].light, CameraLight)
    assert system.stage.name == "gaussians" and isinstance(system.representation, GaussianModel)
    assert set(system.representations) == {"main"}
    assert system.stage_index_at(3) == 0 and system.stage_index_at(4) == 1

    system.enter_stage(1)
    assert system.stage.name == "texture"
    mesh = system.representations["mesh"]
    assert isinstance(mesh, TexturedMesh) and system.representation is mesh
    assert mesh.texture.shape == (64, 64, 3) and mesh.faces.shape[0] > 0
    assert isinstance(system.representations["main"], GaussianModel)  # the Gaussians are kept
    assert {name for name, _ in system.trainable_parameters()} >= {"representation.texture"}
    assert not any(name.startswith("representation.params") for name, _ in system.trainable_parameters())
    batch = Batch(datamodule.training_batch(4))
    render = system.render(batch.cameras, training=True)
    assert {"rgb", "opacity", "depth", "normal", "albedo"} <= set(render)
    assert render["rgb"].shape == (2, batch.cameras.height, batch.cameras.width, 3)
    losses = system.compute_losses(render, batch, step=4)
    assert "loss_main_refine" in losses and "main_refine_strength" in losses and "loss_main_sds" not in losses
    losses["loss"].backward()
    assert mesh.texture.grad is not None and mesh.texture.grad.abs().sum() > 0


def _run(run_dir, prior, gaussian_steps, texture_steps, max_steps=None, resume=None):
    overrides = ["experiment=dreamgaussian", "prompt=a red cube", *tiny_gaussian_overrides(run_dir, prior, gaussian_steps, texture_steps)]
    if max_steps is not None:
        overrides.append(f"trainer.max_steps={max_steps}")
    if resume is not None:
        overrides.append(f"resume={resume}")
    return run(compose_config(overrides))


@pytest.mark.slow
def test_tiny_dreamgaussian_run_writes_every_output(tmp_path, tiny_pixel_prior):
    run_dir = _run(tmp_path, tiny_pixel_prior, gaussian_steps=4, texture_steps=2)
    for relative in (
        "ckpts/last.ckpt",
        "save/turntable.mp4",
        "export/gaussians.ply",
        "export/model.glb",
        "export/model.obj",
        "export/model.mtl",
        "metrics.csv",
    ):
        assert (run_dir / relative).is_file(), relative
    assert list((run_dir / "export").glob("*.png")), "the OBJ's texture image"
    state = load_checkpoint_file(run_dir / "ckpts/last.ckpt")
    assert state["global_step"] == 6 and state["stage"] == "texture"
    assert state["state_dict"]["representations.mesh.texture"].shape == (64, 64, 3)
    assert state["representation_shapes"]["mesh"]["texture_size"] == (64, 64)
    assert set(state["densification"]) == {"gaussians"} and "guidance.main" in state["generators"]
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    counts = [float(r["train/n_gaussians"]) for r in rows if r.get("train/n_gaussians")]
    assert counts and counts[-1] != 256, "densification changed the number of Gaussians"
    assert any(r.get("train/loss_main_refine") for r in rows), "stage 2 ran"
    ply = PlyData.read(str(run_dir / "export/gaussians.ply"))
    assert 0 < ply["vertex"].count <= state["representation_shapes"]["main"]["n_gaussians"]


@pytest.mark.slow
@pytest.mark.parametrize("stop_at", [3, 5], ids=["during-densification", "after-the-stage-switch"])
def test_resume_matches_an_uninterrupted_run(tmp_path, tiny_pixel_prior, stop_at):
    straight = _run(tmp_path / "straight", tiny_pixel_prior, 4, 2)
    _run(tmp_path / "stopped", tiny_pixel_prior, 4, 2, max_steps=stop_at)
    resumed = _run(tmp_path / "stopped", tiny_pixel_prior, 4, 2, resume=tmp_path / "stopped/ckpts/last.ckpt")
    a = load_checkpoint_file(straight / "ckpts/last.ckpt")
    b = load_checkpoint_file(resumed / "ckpts/last.ckpt")
    n_gaussians = a["representation_shapes"]["main"]["n_gaussians"]
    assert b["representation_shapes"] == a["representation_shapes"] and n_gaussians != 256
    assert a["stage"] == b["stage"] == "texture"
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert {"representations.main.params.means", "representations.mesh.texture"} <= set(a["state_dict"])
    for key in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][key], a["state_dict"][key], rtol=0, atol=0, msg=key)


def test_torch_relocation_matches_the_formula_of_gsplats_kernel():
    from math import comb, sqrt

    from framework.representations.relocation import compute_relocation_torch

    n_max = 51
    binoms = torch.tensor([[comb(n, k) for k in range(n_max)] for n in range(n_max)], dtype=torch.float32)
    opacities = torch.tensor([0.9, 0.5, 0.05, 0.99])
    scales = torch.rand(4, 3) + 0.1
    ratios = torch.tensor([1, 2, 7, 30])
    new_opacities, new_scales = compute_relocation_torch(opacities, scales, ratios.clone(), binoms)
    for j, (o, n) in enumerate(zip(opacities.tolist(), ratios.tolist())):
        new_o = 1 - (1 - o) ** (1 / n)
        denominator = sum(comb(i - 1, k) * (-1) ** k / sqrt(k + 1) * new_o ** (k + 1) for i in range(1, n + 1) for k in range(i))
        assert new_opacities[j].item() == pytest.approx(new_o, rel=1e-5)
        torch.testing.assert_close(new_scales[j], scales[j] * (o / denominator), rtol=1e-4, atol=0)
    assert torch.allclose(compute_relocation_torch(opacities, scales, torch.ones(4, dtype=torch.long), binoms)[1], scales)


@pytest.mark.slow
def test_tiny_run_with_the_mcmc_strategy_on_cpu(tmp_path, tiny_pixel_prior):
    overrides = [o for o in tiny_gaussian_overrides(tmp_path, tiny_pixel_prior, 4, 1) if not o.startswith("densification.grow_grad2d")]
    run_dir = run(compose_config(["experiment=dreamgaussian", "prompt=a red cube", *overrides, "densification=mcmc", "densification.cap_max=320"]))
    state = load_checkpoint_file(run_dir / "ckpts/last.ckpt")
    assert 256 < state["representation_shapes"]["main"]["n_gaussians"] <= 320, "MCMC added Gaussians up to its cap"
    assert (run_dir / "export/gaussians.ply").is_file()
