"""Stages in the base system: a three-stage toy method switches, converts, rebuilds its optimisers
and resumes bit-exactly from any checkpoint, across both switches; trainable guidance parts are
optimised and checkpointed while frozen guidance weights are not."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from framework.callbacks.stage_switch import StageSwitch
from framework.cameras.batch import Batch
from framework.cameras.datamodule import OrbitCameraDataModule
from framework.cameras.distribution import OrbitDistribution
from framework.guidance.slot import GuidanceSlot
from framework.representations.background import SolidBackground
from framework.representations.materials import DiffuseMaterial
from framework.schedules import Schedule
from framework.stages import Stage, resolution_schedule, stage_index_at
from framework.system import GenerationSystem
from framework.utils.checkpoint_io import load_checkpoint_file
from tests.toys import GrowBlob, ToyBlob, ToyGuidance, ToyRenderer

STEPS = 9  # three stages of three steps


def toy_system(trainable_guidance: bool = False) -> GenerationSystem:
    rates = {"representation.colours": 0.05, "representation.log_radius": 0.02, "guidance.main": 0.01}
    return GenerationSystem(
        representations={"a": ToyBlob()},
        renderers={"main": ToyRenderer()},
        materials={"main": DiffuseMaterial()},
        background=SolidBackground(),
        stages={
            "coarse": {"steps": 3, "representation": "a", "learning_rates": rates},
            "grown": {"steps": 3, "representation": "b", "convert": GrowBlob("b"), "learning_rates": {**rates, "representation.colours": 0.1}},
            "fine": {"steps": 3, "representation": "c", "convert": GrowBlob("c"), "slots": {"main": {"weight": [[6, 1.0], [9, 3.0]]}}, "learning_rates": rates},
        },
        slots={"main": GuidanceSlot("main", ToyGuidance(trainable=trainable_guidance))},
        optimizer=torch.optim.Adam,
    )


def fit(tmp_path: Path, name: str, ckpt_path: Path | None = None, trainable_guidance: bool = False) -> GenerationSystem:
    system = toy_system(trainable_guidance)
    datamodule = OrbitCameraDataModule(OrbitDistribution(), batch_size=2, resolution=8, seed=1, eval_resolution=8, n_validation_views=1)
    trainer = pl.Trainer(
        max_steps=STEPS,
        callbacks=[StageSwitch(), ModelCheckpoint(dirpath=tmp_path / name, filename="step{step}", every_n_train_steps=1, save_top_k=-1, auto_insert_metric_name=False)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        accelerator="cpu",
    )
    trainer.fit(system, datamodule=datamodule, ckpt_path=ckpt_path)
    return system


def test_stage_boundaries_and_resolution_schedule():
    stages = [Stage("a", 3, resolution=32), Stage("empty", 0, resolution=48), Stage("b", 2, resolution=64)]
    assert [stage_index_at(stages, step) for step in (0, 2, 3, 4, 5, 100)] == [0, 0, 2, 2, 2, 2]
    schedule = resolution_schedule(stages, 16)
    assert isinstance(schedule, Schedule) and [schedule(s) for s in (0, 2, 3, 10)] == [32, 32, 64, 64]
    assert resolution_schedule([Stage("a", 3), Stage("b", 2, resolution=64)], 16)(4) == 64
    assert resolution_schedule([Stage("a", 3)], 16) == 16


def test_three_stage_toy_switches_converts_and_rebuilds_optimisers(tmp_path):
    system = fit(tmp_path, "straight")
    assert system.stage.name == "fine" and set(system.representations) == {"a", "b", "c"}
    assert system.representations["c"].colours.shape == (8, 3)
    # The fine stage trains only its own representation: the earlier ones kept their last values.
    state = load_checkpoint_file(tmp_path / "straight/step6.ckpt")
    assert state["stage"] == "grown" and state["representation_shapes"] == {"a": {"n": 2}, "b": {"n": 4}}
    torch.testing.assert_close(system.representations["b"].colours.detach(), state["state_dict"]["representations.b.colours"], rtol=0, atol=0)
    assert not torch.equal(system.representations["c"].colours[:4].detach(), system.representations["b"].colours.detach())
    assert set(load_checkpoint_file(tmp_path / "straight/step9.ckpt")["optimizer_states"][0]) == {"representation.colours", "representation.log_radius"}


@pytest.mark.parametrize("stop", [2, 3, 5, 6, 7])
def test_three_stage_toy_resumes_bit_exactly_across_both_switches(tmp_path, stop):
    straight = fit(tmp_path, "straight").state_dict()
    fit(tmp_path, "stopped")  # the checkpoints to resume from
    resumed = fit(tmp_path, "resumed", ckpt_path=tmp_path / f"stopped/step{stop}.ckpt").state_dict()
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=key)


def test_trainable_guidance_parts_train_and_are_checkpointed_but_frozen_weights_are_not(tmp_path):
    system = fit(tmp_path, "straight", trainable_guidance=True)
    guidance = system.slots["main"].guidance
    state = load_checkpoint_file(tmp_path / "straight/step9.ckpt")
    keys = set(state["state_dict"])
    assert {"guidance_parts.main.camera_embedding.weight", "guidance_parts.main.camera_embedding.bias"} <= keys
    assert not any("frozen" in key for key in keys)
    assert "guidance.main" in state["optimizer_states"][0]  # its own parameter group and learning rate
    assert "guidance.main" in state["generators"]
    first = load_checkpoint_file(tmp_path / "straight/step1.ckpt")["state_dict"]["guidance_parts.main.camera_embedding.weight"]
    assert not torch.equal(first, state["state_dict"]["guidance_parts.main.camera_embedding.weight"]), "the camera embedding trained"
    torch.testing.assert_close(guidance.camera_embedding.weight.detach(), state["state_dict"]["guidance_parts.main.camera_embedding.weight"], rtol=0, atol=0)
    # Exact resume holds for the trainable part too.
    resumed = fit(tmp_path, "resumed", ckpt_path=tmp_path / "straight/step4.ckpt", trainable_guidance=True)
    torch.testing.assert_close(resumed.slots["main"].guidance.camera_embedding.weight, guidance.camera_embedding.weight, rtol=0, atol=0)


def test_stage_and_loss_declarations_are_checked_at_start():
    with pytest.raises(ValueError, match=r"loss terms without a weight \['sparsity'\]"):
        GenerationSystem({"a": ToyBlob()}, {"main": ToyRenderer()}, {"main": DiffuseMaterial()}, SolidBackground(), {"s": {"steps": 1, "representation": "a"}}, losses={"sparsity": lambda render, batch: render["opacity"].mean()})
    with pytest.raises(ValueError, match=r"weights of no loss term \['typo'\]"):
        GenerationSystem({"a": ToyBlob()}, {"main": ToyRenderer()}, {"main": DiffuseMaterial()}, SolidBackground(), {"s": {"steps": 1, "representation": "a"}}, loss_weights={"typo": 1.0})
    with pytest.raises(ValueError, match="representation 'b' is not one of"):
        GenerationSystem({"a": ToyBlob()}, {"main": ToyRenderer()}, {"main": DiffuseMaterial()}, SolidBackground(), {"s": {"steps": 1, "representation": "b"}})
    with pytest.raises(ValueError, match="unknown slots"):
        GenerationSystem({"main": ToyBlob()}, {"main": ToyRenderer()}, {"main": DiffuseMaterial()}, SolidBackground(), {"s": {"steps": 1, "slots": {"aux": {}}}})


def test_a_null_learning_rate_freezes_its_prefix_for_the_stage(tmp_path):
    """Fantasia3D's appearance stage freezes the geometry (`representation: null`): the frozen
    prefix gets no optimiser and keeps its values over the stage's steps, although the loss
    reaches it, while the other prefixes train; the next stage trains it again."""
    system = GenerationSystem(
        representations={"a": ToyBlob()},
        renderers={"main": ToyRenderer()},
        materials={"main": DiffuseMaterial()},
        background=SolidBackground(),
        stages={
            "shape": {"steps": 2, "representation": "a", "learning_rates": {"representation.colours": None, "representation.log_radius": 0.05}},
            "colour": {"steps": 2, "representation": "a", "learning_rates": {"representation": None, "representation.colours": 0.05}},
        },
        slots={"main": GuidanceSlot("main", ToyGuidance())},
    )
    assert set(system.stage_optimizers()) == {"representation.log_radius"}
    datamodule = OrbitCameraDataModule(OrbitDistribution(), batch_size=1, resolution=8, seed=1, eval_resolution=8, n_validation_views=1)
    trainer = pl.Trainer(
        max_steps=4,
        callbacks=[StageSwitch(), ModelCheckpoint(dirpath=tmp_path, filename="step{step}", every_n_train_steps=1, save_top_k=-1, auto_insert_metric_name=False)],
        logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, accelerator="cpu",
    )
    trainer.fit(system, datamodule=datamodule)
    states = {step: load_checkpoint_file(tmp_path / f"step{step}.ckpt") for step in range(1, 5)}
    colours, radius = "representations.a.colours", "representations.a.log_radius"
    assert set(states[2]["optimizer_states"][0]) == {"representation.log_radius"}
    assert set(states[4]["optimizer_states"][0]) == {"representation.colours"}
    assert torch.equal(states[1]["state_dict"][colours], states[2]["state_dict"][colours])
    assert not torch.equal(states[1]["state_dict"][radius], states[2]["state_dict"][radius])
    assert torch.equal(states[3]["state_dict"][radius], states[4]["state_dict"][radius])
    assert not torch.equal(states[3]["state_dict"][colours], states[4]["state_dict"][colours])
    # The loss does reach the frozen parameter: only the missing optimiser keeps it still.
    batch = Batch(OrbitDistribution().sample(1, 8, torch.Generator().manual_seed(0)))
    system.compute_losses(system.render(batch.cameras, training=True), batch, 3)["loss"].backward()
    assert system.representations["a"].log_radius.grad.abs() > 0
