"""Score distillation on point clouds (GSGEN's 3D prior): the bundled folder and a Point-E
checkpoint with a CLIP text encoder, the estimators, and the gradient reaching the centres only."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

from bundled.prior.model import build_tokenizer
from framework.cameras.distribution import OrbitDistribution
from framework.guidance.condition import Condition
from framework.guidance.point_cloud import PointCloudGuidance
from framework.guidance.point_e import PointEConfig, PointETransformer
from framework.guidance.slot import GuidanceSlot


def _condition(text: str = "a red cube") -> Condition:
    return Condition(OrbitDistribution().sample(2, 32, torch.Generator().manual_seed(0)), text=text)


def _guidance(prior, **kwargs) -> PointCloudGuidance:
    return PointCloudGuidance(str(prior), n_points=64, guidance_scale=3.0, device="cpu", seed=2, **kwargs)


def _cloud(n: int = 200) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.cat([torch.rand(n, 3, generator=generator) - 0.5, torch.rand(n, 3, generator=generator)], dim=-1)


def test_sds_on_a_cloud_is_the_formula_on_its_sampled_points(tiny_point_cloud_prior):
    guidance = _guidance(tiny_point_cloud_prior)
    points = _cloud().requires_grad_(True)
    state = guidance.generator.get_state()
    out = guidance(points, _condition(), 0)
    out["loss_sds"].backward()
    guidance.generator.set_state(state)  # replay: the subset, then the timestep and the noise
    x0 = guidance.as_points(points.detach(), guidance.generator)
    t = guidance.sample_timesteps(1, 0)
    noise = torch.randn(x0.shape, generator=guidance.generator)
    with torch.no_grad():
        eps = guidance.guided_noise(guidance.noisy_samples(x0, t, noise), t, _condition())
    a = guidance.alphas_cumprod[t]
    expected = ((1 - a) * (eps - noise))[0, :3, :, 0].T * guidance.prior.scales[:3]  # d(model xyz)/d(xyz) = scale
    index = torch.nonzero(points.grad.abs().sum(-1)).squeeze(-1)
    assert len(index) == 64  # 64 of the 200 points were scored
    assert torch.equal(points.grad[:, 3:], torch.zeros(200, 3))  # colours get no gradient by default
    chosen = x0[0, :3, :, 0].T / guidance.prior.scales[:3]
    order = [int(torch.nonzero((points.detach()[:, :3] - row).abs().sum(-1) < 1e-6)[0]) for row in chosen]
    torch.testing.assert_close(points.grad[order, :3], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["sds", "ism", "csd", "nfsd"])
def test_estimators_run_on_a_point_slot(name, tiny_point_cloud_prior):
    slot = GuidanceSlot("points", _guidance(tiny_point_cloud_prior, colour_gradients=True), input="representation.point_cloud", estimator=name)
    points = _cloud().requires_grad_(True)
    slot(points, _condition(), 0)[f"loss_{name}"].backward()
    assert torch.isfinite(points.grad).all() and points.grad[:, :3].abs().sum() > 0 and points.grad[:, 3:].abs().sum() > 0


def test_centres_alone_get_mid_grey_colours_and_vsd_is_refused(tiny_point_cloud_prior):
    guidance = _guidance(tiny_point_cloud_prior)
    sample = guidance.as_points(_cloud()[:, :3], torch.Generator().manual_seed(0))
    assert sample.shape == (1, 6, 64, 1) and torch.allclose(sample[0, 3:], torch.zeros(3, 64, 1))  # rgb 0.5 -> 0
    with pytest.raises(ValueError, match="points \\[N, 3\\] or \\[N, 6\\]"):
        guidance(torch.rand(10, 4), _condition(), 0)
    with pytest.raises(ValueError, match="needs prompt="):
        guidance(_cloud(), _condition(""), 0)
    with pytest.raises(ValueError, match="estimator=vsd needs a guidance with a diffusers UNet"):
        GuidanceSlot("points", guidance, estimator="vsd")


def test_a_point_e_checkpoint_loads_with_a_clip_text_encoder(tmp_path):
    """Point-E's layout at a tiny size: its checkpoint's keys, a CLIP text model with projection
    whose width is the model's clip_dim, and Point-E's convention (rgb 0..255)."""
    config = PointEConfig(width=64, layers=2, heads=1, clip_dim=8, n_ctx=64)  # 64 channels a head, as Point-E's
    checkpoint = tmp_path / "base.safetensors"
    save_file({k: v.contiguous() for k, v in PointETransformer(config).state_dict().items()}, str(checkpoint))
    tokenizer = build_tokenizer()
    clip = CLIPTextModelWithProjection(
        CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16, projection_dim=8, pad_token_id=0, bos_token_id=1, eos_token_id=1)
    )
    clip.save_pretrained(tmp_path / "clip")  # CLIP's own repository layout: model and tokenizer at the root
    tokenizer.save_pretrained(tmp_path / "clip")
    with pytest.raises(ValueError, match="needs clip_model="):
        PointCloudGuidance(str(checkpoint), device="cpu")
    guidance = PointCloudGuidance(str(checkpoint), clip_model=str(tmp_path / "clip"), n_points=64, device="cpu")
    assert torch.allclose(guidance.prior.scales[3:], torch.full((3,), 2 / 255))
    assert guidance.prior.model.config == replace(config, n_ctx=1024)  # the sizes read from the weights' shapes (n_ctx leaves none)
    vectors = guidance.encode_text(["a red cube", ""])
    assert torch.allclose(vectors[0].norm(), torch.tensor(1.0)) and torch.equal(vectors[1], torch.zeros(8))
    points = _cloud().requires_grad_(True)
    guidance(points, _condition(), 0)["loss_sds"].backward()
    assert torch.isfinite(points.grad).all() and points.grad.abs().sum() > 0
