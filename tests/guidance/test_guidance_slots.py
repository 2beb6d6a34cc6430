"""Guidance slots and conditions: slots compose from the command line and log their own terms;
a slot reads any render key or representation tensor; a reference image reaches the guidance
and the losses with its cameras."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from framework.cameras.batch import Batch, ReferenceView
from framework.cameras.camera import CameraBatch
from framework.cameras.datamodule import OrbitCameraDataModule
from framework.cameras.distribution import OrbitDistribution
from framework.guidance.condition import Condition
from framework.guidance.latent import LatentDiffusionGuidance
from framework.guidance.slot import GuidanceSlot
from framework.launch import build_slots, run
from framework.representations.background import SolidBackground
from framework.representations.materials import DiffuseMaterial
from framework.schedules import as_scalar, value_at
from framework.system import GenerationSystem
from tests.helpers import compose_config, tiny_overrides
from tests.toys import ToyBlob, ToyGuidance, ToyRenderer


def _front_camera(resolution: int = 8) -> CameraBatch:
    return CameraBatch.from_orbit(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([2.8]), torch.tensor([42.0]), resolution)


def test_two_slots_compose_from_the_command_line(tmp_path, tiny_pixel_prior):
    overrides = ["experiment=dreamfusion", "prompt=a red cube", *tiny_overrides(tmp_path, tiny_pixel_prior, max_steps=2)]
    aux = ["+guidance@guidance_slots.aux=bundled", f"guidance_slots.aux.pretrained={tiny_pixel_prior}", "guidance_slots.aux.embedding_cache_dir=null", "guidance_slots.aux.weight=0.5", "guidance_slots.aux.guidance_scale=7.0"]
    cfg = compose_config(overrides + aux)
    slots = build_slots(cfg, torch.device("cpu"))
    assert set(slots) == {"main", "aux"} and slots["aux"].weight == 0.5 and slots["aux"].guidance.guidance_scale == 7.0
    assert slots["main"].guidance.guidance_scale == 20.0 and slots["main"].guidance is not slots["aux"].guidance
    run_dir = run(cfg)
    rows = [row for row in csv.DictReader(open(run_dir / "metrics.csv")) if row.get("train/loss")]
    assert len(rows) == 2
    assert any(row["train/aux_timestep"] != row["train/main_timestep"] for row in rows), "each slot draws its own timesteps"
    for row in rows:
        main, second = float(row["train/loss_main_sds"]), float(row["train/loss_aux_sds"])
        assert main > 0 and second > 0 and float(row["train/aux_timestep"]) > 0
        orientation = float(row["train/loss_orientation"]) * value_at(as_scalar(cfg.loss.weights.orientation), int(row["step"]))
        assert float(row["train/loss"]) == pytest.approx(main + 0.5 * second + orientation, rel=1e-6)


def test_a_slot_reads_render_keys_or_representation_tensors():
    render = {"rgb": torch.rand(1, 4, 4, 3), "normal": torch.rand(1, 4, 4, 3), "opacity": torch.rand(1, 4, 4, 1)}
    blob = ToyBlob()
    assert GuidanceSlot("n", None, input="normal").inputs(render, blob) is render["normal"]
    stacked = GuidanceSlot("latent", None, input=["normal", "opacity"]).inputs(render, blob)
    assert stacked.shape == (1, 4, 4, 4) and torch.equal(stacked[..., 3:], render["opacity"])
    assert GuidanceSlot("points", None, input="representation.colours").inputs(render, blob) is blob.colours
    with pytest.raises(ValueError, match="input \\['depth'\\] is not rendered here"):
        GuidanceSlot("d", None, input="depth").inputs(render, blob)
    with pytest.raises(ValueError, match="ToyBlob has no 'means'"):
        GuidanceSlot("g", None, input="representation.means").inputs(render, blob)


def test_an_encoded_slot_skips_the_image_encoder():
    calls = []

    class Recorder:
        def as_sample(self, images):
            return images * 2 - 1

        def estimate(self, x0, condition, step):
            calls.append(("estimate", tuple(x0.shape)))
            return {"loss_x": x0.sum()}

        def __call__(self, rgb, condition, step):
            calls.append(("call", tuple(rgb.shape)))
            return {"loss_x": rgb.sum()}

    inputs = torch.rand(2, 8, 8, 4)
    GuidanceSlot("latent", Recorder(), encoded=True)(inputs, None, 0)
    GuidanceSlot("rgb", Recorder())(inputs, None, 0)
    assert calls == [("estimate", (2, 4, 8, 8)), ("call", (2, 8, 8, 4))]



@pytest.mark.parametrize(("prompt", "seen"), [("a red cube", "a normal map of a red cube"), (None, None)])
def test_a_stage_slot_text_templates_the_run_prompt(prompt, seen):
    """The geometry stage asks for "a normal map of {prompt}"; another stage keeps the prompt as
    it is; without a prompt (image-to-3D) there is no text to template."""
    guidance = ToyGuidance()
    system = GenerationSystem(
        {"main": ToyBlob()}, {"main": ToyRenderer()}, {"main": DiffuseMaterial()}, SolidBackground(),
        {"geometry": {"steps": 1, "slots": {"main": {"text": "a normal map of {prompt}"}}}, "appearance": {"steps": 1}},
        slots={"main": GuidanceSlot("main", guidance)},
        prompt=prompt,
    )
    batch = Batch(_front_camera())
    system.compute_losses(system.render(batch.cameras, training=True), batch, 0)
    system.stage_index = 1
    system.compute_losses(system.render(batch.cameras, training=True), batch, 1)
    assert [condition.text for condition in guidance.conditions] == [seen, prompt]


def test_an_encoded_slot_feeds_a_latent_prior_its_channels_as_the_latent(tiny_latent_prior, monkeypatch):
    """Fantasia3D's early geometry: a [B, H, W, 4] normal map + mask reaches `estimate` as
    [B, 4, resolution / 8, resolution / 8] in [-1, 1] (resized, never through the VAE), and the
    SDS gradient flows back to the render."""
    guidance = LatentDiffusionGuidance(str(tiny_latent_prior), resolution=32, embedding_cache_dir=None, device="cpu", seed=0)
    monkeypatch.setattr(guidance.vae, "encode", lambda *args, **kwargs: pytest.fail("the VAE encoded an encoded slot's input"))
    seen = []
    real_estimate = guidance.estimate

    def estimate(x0, condition, step):
        seen.append(x0)
        return real_estimate(x0, condition, step)

    monkeypatch.setattr(guidance, "estimate", estimate)
    channels = torch.rand(2, 16, 16, 4, generator=torch.Generator().manual_seed(0))
    channels[0, :8] = 0.0
    channels[1, 8:] = 1.0  # the extremes map to -1 and 1
    channels.requires_grad_(True)
    cameras = OrbitDistribution().sample(2, 16, torch.Generator().manual_seed(1))
    terms = GuidanceSlot("main", guidance, input=["normal_map", "opacity"], encoded=True)(channels, Condition(cameras, "a red cube"), 0)
    (x0,) = seen
    assert x0.shape == (2, 4, 4, 4)
    assert x0.min() >= -1 and x0.max() <= 1 and x0[0, :, :2].max() == -1 and x0[1, :, 2:].min() == 1
    expected = torch.nn.functional.interpolate(channels.detach().permute(0, 3, 1, 2), size=(4, 4), mode="bilinear", align_corners=False) * 2 - 1
    torch.testing.assert_close(x0.detach(), expected, rtol=0, atol=1e-6)
    assert torch.isfinite(terms["loss_sds"])
    terms["loss_sds"].backward()
    assert channels.grad is not None and channels.grad.abs().sum() > 0

def _write_rgba(path, colour=(0, 128, 255)) -> None:
    image = np.zeros((16, 16, 4), dtype=np.uint8)
    image[4:12, 4:12, :3] = colour
    image[4:12, 4:12, 3] = 255
    Image.fromarray(image, "RGBA").save(path)


def test_reference_view_from_rgba_and_from_rgb_on_white(tmp_path):
    _write_rgba(tmp_path / "object.png")
    reference = ReferenceView.from_file(tmp_path / "object.png", _front_camera(16))
    assert reference.mask.sum() == 64 and torch.allclose(reference.image[0, 8, 8], torch.tensor([0.0, 128 / 255, 1.0]))
    assert torch.equal(reference.image[0, 0, 0], torch.ones(3))  # outside the mask: white
    rgb = np.full((16, 16, 3), 255, dtype=np.uint8)
    rgb[2:6, 2:6] = (200, 10, 10)
    Image.fromarray(rgb).save(tmp_path / "on_white.png")
    assert ReferenceView.from_file(tmp_path / "on_white.png", _front_camera(16), framing="keep").mask.sum() == 16
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png' is not a readable image file"):
        ReferenceView.from_file(tmp_path / "broken.png", _front_camera(16))


def test_a_condition_carries_the_reference_image_and_every_views_camera(tmp_path):
    _write_rgba(tmp_path / "object.png")
    datamodule = OrbitCameraDataModule(OrbitDistribution(), batch_size=3, resolution=8, image=str(tmp_path / "object.png"), reference_resolution=16)
    batch = next(iter(datamodule.train_dataloader()))
    assert isinstance(batch, Batch) and batch.reference is not None and batch.reference.image.shape == (1, 16, 16, 3)
    seen_by_loss = []
    guidance = ToyGuidance()
    system = GenerationSystem(
        {"main": ToyBlob()}, {"main": ToyRenderer()}, {"main": DiffuseMaterial()}, SolidBackground(), {"only": {"steps": 1}},
        slots={"main": GuidanceSlot("main", guidance)},
        losses={"reference_rgb": lambda render, batch: seen_by_loss.append(batch.reference) or ((render["rgb"][:1] - batch.reference.image.mean()) ** 2).mean()},
        loss_weights={"reference_rgb": 1.0},
        prompt=None,
    )
    render = system.render(batch.cameras, training=True)
    losses = system.compute_losses(render, batch, 0)
    condition = guidance.conditions[-1]
    assert condition.text is None and condition.reference is batch.reference and seen_by_loss == [batch.reference]
    assert torch.equal(condition.cameras.c2w, batch.cameras.c2w) and condition.cameras.batch_size == 3
    assert set(losses) == {"loss", "loss_main_toy", "main_target_red", "loss_reference_rgb"}
