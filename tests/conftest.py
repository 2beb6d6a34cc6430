"""Shared fixtures: tiny randomly initialised diffusers models saved to disk, so tests exercise the
real `from_pretrained` loading path without downloads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

from bundled.prior.model import PriorArchitecture, build_scheduler, build_text_encoder, build_tokenizer, build_unet
from bundled.prior.multi_view_model import build_multi_view_unet, inflate_text_prior
from bundled.prior.novel_view_model import (
    NovelViewArchitecture,
    build_feature_extractor,
    build_image_encoder,
    build_projection,
    build_unet_for_views,
    save_novel_view_prior,
)
from bundled.prior.sampling import load_prior
from bundled.prior.weights import save_prior
from framework.guidance.camera_projection import camera_projection
from framework.guidance.mvdream_checkpoint import mvdream_unet_config
from tests.ldm_layout import ldm_unet_state_dict, ldm_vae_state_dict


TINY_PIXEL = PriorArchitecture(resolution=32, text_width=32, text_layers=1, block_channels=(8, 16, 16, 16), attention_head_dim=8)
TINY_NOVEL_VIEW = NovelViewArchitecture(unet=TINY_PIXEL, image_width=16, image_layers=1, image_heads=2, patch_size=8)


def _tiny_sd_vae() -> AutoencoderKL:
    """Stable Diffusion's VAE layout (4 latent channels, 8x down), 8 channels wide."""
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )


def _tiny_sd_unet(in_channels: int, cross_attention_dim: int) -> UNet2DConditionModel:
    """Stable Diffusion's UNet layout at 4x4 latents (in_channels 8: Zero-1-to-3's concatenated latent)."""
    return UNet2DConditionModel(
        sample_size=4,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(16, 16),
        layers_per_block=1,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )


@pytest.fixture(scope="session")
def tiny_pixel_prior(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An IF-stage-I-shaped pixel prior (T5 + UNet + DDPM), random weights, 32 px."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_pixel_prior")
    tokenizer = build_tokenizer()
    save_prior(folder, build_unet(TINY_PIXEL), build_text_encoder(TINY_PIXEL, len(tokenizer)), tokenizer, build_scheduler(), {"test": True})
    return folder


@pytest.fixture(scope="session")
def tiny_latent_prior(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Stable-Diffusion-shaped latent prior (CLIP text encoder + VAE + UNet), random weights."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_latent_prior")
    tokenizer = build_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16, pad_token_id=0, bos_token_id=1, eos_token_id=1)
    )
    vae, unet = _tiny_sd_vae(), _tiny_sd_unet(in_channels=4, cross_attention_dim=32)
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="v_prediction")
    for name, part in (("tokenizer", tokenizer), ("text_encoder", text_encoder), ("vae", vae), ("unet", unet), ("scheduler", scheduler)):
        part.save_pretrained(folder / name)
    return folder


@pytest.fixture(scope="session")
def tiny_novel_view_prior(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled novel-view prior's layout (pixel Zero-1-to-3: cc_projection/, no VAE), random
    weights, 32 px."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_novel_view_prior")
    arch = TINY_NOVEL_VIEW
    projection = build_projection(arch)
    torch.nn.init.normal_(projection.weight, std=0.3)  # the identity start would ignore the pose
    save_novel_view_prior(folder, build_unet_for_views(arch), build_image_encoder(arch), projection, build_scheduler(), build_feature_extractor(arch), {"test": True})
    return folder


@pytest.fixture(scope="session")
def tiny_zero123_prior(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stable Zero123's diffusers layout (VAE, 8-channel UNet, CLIP vision encoder,
    clip_camera_projection/ with `proj.*` keys), random weights."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_zero123_prior")
    vae, unet = _tiny_sd_vae(), _tiny_sd_unet(in_channels=8, cross_attention_dim=24)
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8, projection_dim=24)
    )
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    for name, part in (("vae", vae), ("unet", unet), ("image_encoder", image_encoder), ("scheduler", scheduler)):
        part.save_pretrained(folder / name)
    projection = camera_projection(24)
    torch.nn.init.normal_(projection.weight, std=0.3)
    (folder / "clip_camera_projection").mkdir()
    (folder / "clip_camera_projection" / "config.json").write_text('{"_class_name": "CLIPCameraProjection", "embedding_dim": 24, "additional_embeddings": 4}')
    save_file({"proj.weight": projection.weight.detach().contiguous(), "proj.bias": projection.bias.detach().contiguous()}, str(folder / "clip_camera_projection" / "diffusion_pytorch_model.safetensors"))
    return folder


@pytest.fixture(scope="session")
def front_view_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The true front view of a red cube (elevation 15, as `scripts/ground_truth.py` writes view_00)."""
    from PIL import Image

    from bundled.world.objects import OBJECTS
    from bundled.world.render import render_object
    from framework.cameras.camera import CameraBatch

    camera = CameraBatch.from_orbit(torch.tensor([15.0]), torch.tensor([0.0]), torch.tensor([2.8]), torch.tensor([42.0]), 48)
    rgb, _ = render_object(OBJECTS["cube"], "red", camera)
    path = tmp_path_factory.mktemp("reference") / "view_00.png"
    Image.fromarray((rgb[0] * 255).round().byte().numpy()).save(path)
    return path


@pytest.fixture(scope="session")
def tiny_multi_view_prior(tmp_path_factory: pytest.TempPathFactory, tiny_pixel_prior: Path) -> Path:
    """The tiny text prior inflated, with a random camera embedding (a trained one is not zero)."""
    torch.manual_seed(0)
    unet = build_multi_view_unet(TINY_PIXEL)
    inflate_text_prior(unet, load_prior(tiny_pixel_prior).unet)
    torch.nn.init.normal_(unet.class_embedding.linear_2.weight, std=0.5)
    folder = tmp_path_factory.mktemp("tiny_multi_view_prior")
    tokenizer = build_tokenizer()
    save_prior(folder, unet, load_prior(tiny_pixel_prior).text_encoder, tokenizer, build_scheduler(), {"test": True}, class_name="BundledMultiViewPrior")
    return folder


@pytest.fixture(scope="session")
def tiny_normal_depth_prior(tmp_path_factory: pytest.TempPathFactory, tiny_multi_view_prior: Path) -> Path:
    """RichDreamer's normal-depth prior in the bundled layout: the tiny multi-view prior widened to
    4 channels, the new ones random (a trained one's are not zero)."""
    torch.manual_seed(0)
    source = load_prior(tiny_multi_view_prior)
    unet = build_multi_view_unet(TINY_PIXEL, channels=4)
    inflate_text_prior(unet, source.unet)
    with torch.no_grad():
        torch.nn.init.normal_(unet.conv_in.weight[:, 3:], std=0.1)
        torch.nn.init.normal_(unet.conv_out.weight[3:], std=0.1)
    folder = tmp_path_factory.mktemp("tiny_normal_depth_prior")
    save_prior(folder, unet, source.text_encoder, build_tokenizer(), build_scheduler(), {"test": True}, class_name="BundledMultiViewPrior")
    return folder


@pytest.fixture(scope="session")
def tiny_point_cloud_prior(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled point-cloud prior's folder layout (Point-E's keys, bag-of-words text), random
    weights: 16 wide, one layer, 64 points."""
    from bundled.prior.point_cloud_model import CONVENTION, PointCloudPriorArchitecture, build_point_cloud_model, build_text_encoder
    from framework.guidance.point_cloud_prior import save_point_cloud_prior

    torch.manual_seed(0)
    arch = PointCloudPriorArchitecture(width=16, layers=1, heads=2, text_dim=8, points=64)
    folder = tmp_path_factory.mktemp("tiny_point_cloud_prior") / "prior"
    save_point_cloud_prior(folder, build_point_cloud_model(arch), build_text_encoder(arch), CONVENTION, {"test": True})
    return folder


def tiny_richdreamer_modules(base_folder: Path) -> dict[str, torch.nn.Module]:
    """RichDreamer's checkpoints' modules at the tiny latent prior's sizes, random (seeded):
    the normal-depth model's multi-view UNet and 4-channel VAE, the albedo model's 5-channel UNet."""
    unet_config = mvdream_unet_config(UNet2DConditionModel.load_config(str(base_folder), subfolder="unet"))
    vae_config = {key: value for key, value in AutoencoderKL.load_config(str(base_folder), subfolder="vae").items() if not key.startswith("_")}
    torch.manual_seed(0)
    return {
        "normal_depth_unet": UNet2DConditionModel.from_config(unet_config),
        "normal_depth_vae": AutoencoderKL.from_config({**vae_config, "in_channels": 4, "out_channels": 4}),
        "albedo_unet": UNet2DConditionModel.from_config({**unet_config, "in_channels": 5}),
    }


@pytest.fixture(scope="session")
def tiny_richdreamer_checkpoints(tmp_path_factory: pytest.TempPathFactory, tiny_latent_prior: Path) -> dict[str, Path]:
    """`tiny_richdreamer_modules` written as RichDreamer's LDM checkpoints (safetensors):
    {"normal_depth": UNet + first_stage_model, "albedo": UNet}."""
    modules = tiny_richdreamer_modules(tiny_latent_prior)
    folder = tmp_path_factory.mktemp("tiny_richdreamer")
    states = {
        "normal_depth": {**ldm_unet_state_dict(modules["normal_depth_unet"]), **ldm_vae_state_dict(modules["normal_depth_vae"])},
        "albedo": ldm_unet_state_dict(modules["albedo_unet"]),
    }
    paths = {}
    for name, state in states.items():
        paths[name] = folder / f"{name}_mv.safetensors"
        save_file({key: value.contiguous() for key, value in state.items()}, str(paths[name]))
    return paths


@pytest.fixture
def sphere_point_prior(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """The point prior of the point-prior shapes (`framework.representations.point_prior_shape`:
    RichDreamer's DMTet start, ProlificDreamer's NeRF start) replaced by one that answers every
    prompt with 1,024 points on a sphere of radius 0.5, drawn from the generator it is given: a
    tiny random prior's points enclose no solid. Records each call's prompts, seed, steps and
    guidance scale."""
    import framework.representations.point_prior_shape as shapes

    calls: list[tuple] = []

    def sample(prior, prompts, generator, steps, guidance_scale, points):
        calls.append((prompts, generator.initial_seed(), steps, guidance_scale))
        xyz = torch.nn.functional.normalize(torch.randn(len(prompts), 1024, 3, generator=generator), dim=-1) * 0.5
        return xyz, torch.full_like(xyz, 0.5)

    monkeypatch.setattr(shapes, "load_point_cloud_model", lambda pretrained, clip_model: object())
    monkeypatch.setattr(shapes, "sample_point_clouds", sample)
    return calls
