"""Multi-view guidance (MVDream): attention across the views of a group, the camera input, view
sets from the camera sampler, and SDS under a tiny multi-view prior."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention
from safetensors.torch import save_file

from bundled.prior.multi_view_model import build_multi_view_unet, inflate_text_prior
from bundled.prior.model import build_scheduler, build_tokenizer
from bundled.prior.sampling import load_prior, sample_images
from bundled.prior.weights import save_prior
from framework.cameras.distribution import OrbitDistribution
from framework.guidance.condition import Condition
from framework.guidance.camera_condition import camera_condition
from framework.guidance.multi_view import MultiViewLatentGuidance, MultiViewPixelGuidance
from framework.guidance.mvdream_checkpoint import load_mvdream_unet, mvdream_unet_config
from framework.guidance.multi_view_attention import MultiViewAttnProcessor, set_multi_view_attention
from framework.guidance.pixel import PixelDiffusionGuidance
from tests.conftest import TINY_PIXEL
from tests.ldm_layout import ldm_unet_state_dict


def test_self_attention_spans_the_views_of_a_group_and_only_them():
    torch.manual_seed(0)
    attention = Attention(query_dim=8, heads=2, dim_head=4)
    processor = MultiViewAttnProcessor(num_views=2)
    tokens = torch.randn(4, 5, 8)  # two groups of two views, five tokens each
    out = processor(attention, tokens)
    changed = tokens.clone()
    changed[1] += 1.0  # the second view of the first group
    moved = processor(attention, changed)
    assert not torch.allclose(out[0], moved[0])  # its partner view sees it
    torch.testing.assert_close(out[2:], moved[2:])  # the other group does not
    single = MultiViewAttnProcessor(num_views=1)(attention, tokens)
    torch.testing.assert_close(single[2:], MultiViewAttnProcessor(num_views=1)(attention, changed)[2:])
    with pytest.raises(ValueError, match="groups of 2 views, got a batch of 3"):
        processor(attention, torch.randn(3, 5, 8))


def test_view_sets_are_ninety_degrees_apart_at_one_elevation():
    cameras = OrbitDistribution().sample_groups(3, 4, 16, torch.Generator().manual_seed(0))
    assert cameras.batch_size == 12
    elevation = cameras.elevation_deg.view(3, 4)
    assert (elevation == elevation[:, :1]).all() and (cameras.distance.view(3, 4) == cameras.distance.view(3, 4)[:, :1]).all()
    steps = (cameras.azimuth_deg.view(3, 4).diff(dim=1) % 360.0)
    torch.testing.assert_close(steps, torch.full((3, 3), 90.0))


def test_camera_condition_is_the_camera_to_world_matrix_on_the_unit_sphere():
    cameras = OrbitDistribution().sample(5, 16, torch.Generator().manual_seed(1))
    condition = camera_condition(cameras).view(5, 4, 4)
    torch.testing.assert_close(condition[:, :3, :3], cameras.c2w[:, :3, :3])
    torch.testing.assert_close(condition[:, :3, 3].norm(dim=-1), torch.ones(5))


def test_an_inflated_text_prior_predicts_what_the_text_prior_does(tiny_pixel_prior):
    text = load_prior(tiny_pixel_prior).unet
    unet = build_multi_view_unet(TINY_PIXEL)
    inflate_text_prior(unet, text)
    x, embeddings = torch.randn(2, 3, 32, 32), torch.randn(2, 12, TINY_PIXEL.text_width)
    with torch.no_grad():
        torch.testing.assert_close(unet(x, 500, encoder_hidden_states=embeddings, class_labels=torch.randn(2, 16)).sample, text(x, 500, encoder_hidden_states=embeddings).sample)


def test_multi_view_sds_reads_the_cameras_and_needs_whole_groups(tiny_multi_view_prior, tiny_pixel_prior):
    guidance = MultiViewPixelGuidance(str(tiny_multi_view_prior), num_views=2, guidance_scale=5.0, device="cpu", embedding_cache_dir=None)
    cameras = OrbitDistribution().sample_groups(2, 2, 32, torch.Generator().manual_seed(0))
    rgb = torch.rand(4, 32, 32, 3, requires_grad=True)
    guidance(rgb, Condition(cameras, "a red cube"), 0)["loss_sds"].backward()
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0
    noisy, t = torch.randn(4, 3, 32, 32), torch.full((4,), 500)
    other = OrbitDistribution().sample_groups(2, 2, 32, torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert not torch.allclose(guidance.guided_noise(noisy, t, Condition(cameras, "a red cube")), guidance.guided_noise(noisy, t, Condition(other, "a red cube")))
    with pytest.raises(ValueError, match="groups of 2 views; the step has 3 cameras"):
        guidance(torch.rand(3, 32, 32, 3), Condition(OrbitDistribution().sample(3, 32, torch.Generator()), "a red cube"), 0)
    with pytest.raises(ValueError, match="has no camera embedding"):
        MultiViewPixelGuidance(str(tiny_pixel_prior), device="cpu", embedding_cache_dir=None)
    assert isinstance(guidance, PixelDiffusionGuidance)


def test_a_prior_that_reads_camera_rays_sees_them_in_sds_and_in_sampling(tiny_pixel_prior, tmp_path):
    """With its camera embedding at zero, only the ray map carries the camera."""
    text_prior = load_prior(tiny_pixel_prior)
    unet = build_multi_view_unet(TINY_PIXEL, camera_rays=True)
    inflate_text_prior(unet, text_prior.unet)
    torch.nn.init.normal_(unet.conv_in.weight[:, 3:], std=0.5)
    save_prior(tmp_path, unet, text_prior.text_encoder, build_tokenizer(), build_scheduler(), {"test": True}, class_name="BundledMultiViewPrior")
    guidance = MultiViewPixelGuidance(str(tmp_path), num_views=2, guidance_scale=5.0, device="cpu", embedding_cache_dir=None)
    cameras, other = (OrbitDistribution().sample_groups(2, 2, 32, torch.Generator().manual_seed(seed)) for seed in (0, 7))
    noisy, t = torch.randn(4, 3, 32, 32), torch.full((4,), 500)
    with torch.no_grad():
        assert not torch.allclose(guidance.guided_noise(noisy, t, Condition(cameras, "a red cube")), guidance.guided_noise(noisy, t, Condition(other, "a red cube")))
    rgb = torch.rand(4, 32, 32, 3, requires_grad=True)
    guidance(rgb, Condition(cameras, "a red cube"), 0)["loss_sds"].backward()
    assert torch.isfinite(rgb.grad).all()
    prior = load_prior(tmp_path)
    set_multi_view_attention(prior.unet, 2)
    images = sample_images(prior, ["a red cube"] * 4, torch.Generator().manual_seed(0), steps=2, cameras=camera_condition(cameras))
    assert images.shape == (4, 32, 32, 3)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_mvdreams_original_checkpoint_loads_through_diffusers_conversion(tmp_path, tiny_latent_prior, suffix):
    """A tiny UNet in MVDream's LDM layout (SD's keys, `camera_embed.*`) converts to exactly the
    diffusers UNet it was written from, and guides 4-view sets on the base model's VAE and text
    encoder."""
    torch.manual_seed(0)
    config = mvdream_unet_config(UNet2DConditionModel.load_config(str(tiny_latent_prior), subfolder="unet"))
    source = UNet2DConditionModel.from_config(config)
    ldm = ldm_unet_state_dict(source)
    assert "model.diffusion_model.camera_embed.0.weight" in ldm and "model.diffusion_model.input_blocks.1.1.proj_in.weight" in ldm
    path = tmp_path / f"mvdream{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in ldm.items()}, str(path))
    else:
        torch.save({"state_dict": ldm}, path)
    guidance = MultiViewLatentGuidance(str(tiny_latent_prior), unet_checkpoint=str(path), resolution=32, device="cpu", embedding_cache_dir=None)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(guidance.unet.state_dict()[key], value, rtol=0, atol=0, msg=key)
    cameras = OrbitDistribution().sample_groups(1, 4, 32, torch.Generator().manual_seed(0))
    rgb = torch.rand(4, 32, 32, 3, requires_grad=True)
    guidance(rgb, Condition(cameras, "a red cube"), 0)["loss_sds"].backward()
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0


def test_a_checkpoint_without_a_camera_embedding_is_named(tmp_path, tiny_latent_prior):
    unet = UNet2DConditionModel.from_pretrained(str(tiny_latent_prior), subfolder="unet")
    path = tmp_path / "sd.safetensors"
    save_file({k: v.contiguous() for k, v in ldm_unet_state_dict(unet).items()}, str(path))
    with pytest.raises(ValueError, match="no model.diffusion_model.camera_embed"):
        load_mvdream_unet(path, unet.config)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mvdream_unet(tmp_path / "missing.pt", unet.config)
