"""RichDreamer's real priors in their original layout, with tiny random weights: the normal-depth
model (MVDream's UNet, 4 channels, and its own 4-channel VAE, both in one LDM checkpoint) and the
depth-conditioned albedo model (5 input channels on SD's VAE); their camera convention."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

from framework.cameras.camera import CameraBatch
from framework.cameras.distribution import OrbitDistribution
from framework.guidance.camera_condition import camera_condition
from framework.guidance.condition import Condition
from framework.guidance.mvdream_checkpoint import load_checkpoint_vae
from framework.guidance.richdreamer import AlbedoGuidance, NormalDepthGuidance
from tests.conftest import tiny_richdreamer_modules
from tests.ldm_layout import ldm_unet_state_dict, ldm_vae_state_dict


def _save(state: dict, path) -> None:
    if path.suffix == ".safetensors":
        save_file({key: value.contiguous() for key, value in state.items()}, str(path))
    else:
        torch.save({"state_dict": state}, path)


def _view_set() -> CameraBatch:
    return OrbitDistribution().sample_groups(1, 4, 32, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_the_normal_depth_checkpoint_loads_its_unet_and_its_own_vae(tmp_path, tiny_latent_prior, suffix):
    """Both converted to exactly the modules they were written from; SDS on a [normal_map,
    depth_map] view set reaches every channel."""
    modules = tiny_richdreamer_modules(tiny_latent_prior)
    unet, vae = modules["normal_depth_unet"], modules["normal_depth_vae"]
    path = tmp_path / f"nd_mv{suffix}"
    _save({**ldm_unet_state_dict(unet), **ldm_vae_state_dict(vae)}, path)
    guidance = NormalDepthGuidance(str(tiny_latent_prior), checkpoint=str(path), resolution=32, device="cpu", embedding_cache_dir=None)
    for module, loaded in ((unet, guidance.unet), (vae, guidance.vae)):
        for key, value in module.state_dict().items():
            torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0, msg=key)
    images = torch.rand(4, 32, 32, 4, requires_grad=True)
    guidance(images, Condition(_view_set(), "a red cube"), 0)["loss_sds"].backward()
    assert torch.isfinite(images.grad).all() and (images.grad.abs().sum(dim=(0, 1, 2)) > 0).all()


def test_a_checkpoint_without_a_vae_is_named(tmp_path, tiny_latent_prior):
    state = ldm_unet_state_dict(tiny_richdreamer_modules(tiny_latent_prior)["normal_depth_unet"])
    with pytest.raises(ValueError, match="no first_stage_model"):
        load_checkpoint_vae(state, AutoencoderKL.load_config(str(tiny_latent_prior), subfolder="vae"), image_channels=4, path="nd.ckpt")
    path = tmp_path / "unet_only.safetensors"
    _save(state, path)
    with pytest.raises(ValueError, match="unet_only.safetensors: no first_stage_model"):
        NormalDepthGuidance(str(tiny_latent_prior), checkpoint=str(path), resolution=32, device="cpu", embedding_cache_dir=None)


def test_the_albedo_model_reads_the_depth_map_beside_its_latent(tiny_latent_prior, tiny_richdreamer_checkpoints):
    """5 input channels (latent + depth at the latent grid); the albedo is distilled, the depth
    only conditions: no gradient reaches it, yet another depth map changes the step."""
    unet = tiny_richdreamer_modules(tiny_latent_prior)["albedo_unet"]
    assert unet.conv_in.weight.shape[1] == 5
    guidance = AlbedoGuidance(str(tiny_latent_prior), checkpoint=str(tiny_richdreamer_checkpoints["albedo"]), resolution=32, device="cpu", embedding_cache_dir=None, seed=3)
    torch.testing.assert_close(guidance.unet.conv_in.weight, unet.conv_in.weight, rtol=0, atol=0)
    albedo = torch.rand(4, 32, 32, 3)

    def step(depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        guidance.generator.manual_seed(3)
        images = torch.cat([albedo, depth], dim=-1).requires_grad_(True)
        guidance(images, Condition(_view_set(), "a red cube"), 0)["loss_sds"].backward()
        return images.grad[..., :3], images.grad[..., 3:]

    near, near_depth_grad = step(torch.full((4, 32, 32, 1), 0.8))
    far, _ = step(torch.full((4, 32, 32, 1), 0.2))
    assert near.abs().sum() > 0 and not near_depth_grad.any()
    assert not torch.allclose(near, far)
    with pytest.raises(ValueError, match="4 channels"):
        guidance(albedo, Condition(_view_set(), "a red cube"), 0)


def test_richdreamer_reads_cameras_turned_about_z_at_two_thirds_of_their_distance():
    cameras = CameraBatch.from_orbit(torch.tensor([0.0, 30.0]), torch.tensor([0.0, 90.0]), torch.tensor([3.0, 2.7]), torch.full((2,), 42.0), 16)
    plain = camera_condition(cameras).view(2, 4, 4)
    turned = camera_condition(cameras, rotate_z_deg=-90.0, distance_scale=2.0 / 3.0).view(2, 4, 4)
    angle = math.radians(-90.0)
    rotation = torch.tensor([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(turned[:, :3, :3], rotation @ plain[:, :3, :3], atol=1e-6, rtol=0)
    torch.testing.assert_close(turned[:, :3, 3].norm(dim=-1), torch.tensor([2.0, 1.8]), atol=1e-5, rtol=0)
    torch.testing.assert_close(turned[0, :3, 3], torch.tensor([0.0, -2.0, 0.0]), atol=1e-5, rtol=0)  # +x turned to -y
