"""Shared fixtures: tiny randomly initialised diffusers models saved to disk, so tests exercise the
real `from_pretrained` loading path without downloads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from bundled.prior.model import PriorArchitecture, build_scheduler, build_text_encoder, build_tokenizer, build_unet
from bundled.prior.weights import save_prior


TINY_PIXEL = PriorArchitecture(resolution=32, text_width=32, text_layers=1, block_channels=(8, 16, 16, 16), attention_head_dim=8)


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
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )
    unet = UNet2DConditionModel(
        sample_size=4,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(16, 16),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="v_prediction")
    for name, part in (("tokenizer", tokenizer), ("text_encoder", text_encoder), ("vae", vae), ("unet", unet), ("scheduler", scheduler)):
        part.save_pretrained(folder / name)
    return folder
