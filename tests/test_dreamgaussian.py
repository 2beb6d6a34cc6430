"""DreamGaussian end to end at tiny sizes: both stages, exports, and exact resume with a changing
number of Gaussians and across the stage switch."""

from __future__ import annotations

import csv

import pytest
import torch
from plyfile import PlyData

from framework.launch import run
from framework.optimizers import OptimizerGroup
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
    assert a["state_dict"].keys() == b["state_dict"].keys()
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
