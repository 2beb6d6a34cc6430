"""MVDream's original checkpoint (LDM format, e.g. `sd-v2.1-base-4view.pt`) as a diffusers UNet.

MVDream's UNet is Stable Diffusion 2.1's plus a camera embedding (`camera_embed`: Linear, SiLU,
Linear on the flattened 16-number camera, added to the time embedding) and self-attention across
views (no weights of its own). diffusers' single-file helpers convert the SD part; the camera
embedding is renamed to the LDM name of a sequential class embedding (`label_emb.0.*`), which the
same helpers map to `class_embedding.linear_1/2` of `class_embed_type="projection"`. The VAE, text
encoder and tokenizer are SD 2.1's own (MVDream trained the UNet only), loaded from the base model.

RichDreamer's checkpoints are MVDream's format with other channel counts (the albedo model reads a
depth map beside its latent: 5 input channels) and, for the normal-depth model, its own VAE of
4-channel images under `first_stage_model.*`, converted by the same helpers (`load_checkpoint_vae`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import LDM_UNET_KEY, convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
from safetensors.torch import load_file

from framework.guidance.camera_condition import CAMERA_FEATURES

_CAMERA_TO_CLASS_EMBEDDING = {f"{LDM_UNET_KEY}camera_embed.0.": f"{LDM_UNET_KEY}label_emb.0.0.", f"{LDM_UNET_KEY}camera_embed.2.": f"{LDM_UNET_KEY}label_emb.0.2."}


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors: safetensors, or a torch file read with `weights_only=True` (a
    Lightning checkpoint's `state_dict` unwrapped). Nothing else is unpickled.

    Raises:
        FileNotFoundError: naming the path.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MVDream checkpoint {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state)


def mvdream_unet_config(base_config: Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """The diffusers config of MVDream's UNet: the base SD UNet's, with the camera embedding (and
    `overrides`, e.g. RichDreamer's albedo model's in_channels=5)."""
    config = {key: value for key, value in dict(base_config).items() if not key.startswith("_")}
    config.update(class_embed_type="projection", projection_class_embeddings_input_dim=CAMERA_FEATURES, **overrides)
    return config


def load_mvdream_unet(source: str | Path | Mapping[str, torch.Tensor], base_config: Mapping[str, Any], **overrides: Any) -> UNet2DConditionModel:
    """The UNet of an MVDream-format checkpoint (a path, or its tensors from `read_checkpoint`),
    on the CPU in float32; `overrides` change the base config (`mvdream_unet_config`).

    Raises:
        ValueError: the checkpoint has no camera embedding, or does not fit the base config.
    """
    path = source if isinstance(source, (str, Path)) else "the checkpoint"
    state = read_checkpoint(source) if isinstance(source, (str, Path)) else source
    renamed = {}
    for key, value in state.items():
        for old, new in _CAMERA_TO_CLASS_EMBEDDING.items():
            if key.startswith(old):
                key = new + key[len(old) :]
        renamed[key] = value
    if f"{LDM_UNET_KEY}label_emb.0.0.weight" not in renamed:
        raise ValueError(f"{path}: no {LDM_UNET_KEY}camera_embed.* weights; is it an MVDream checkpoint?")
    config = mvdream_unet_config(base_config, **overrides)
    converted = convert_ldm_unet_checkpoint(renamed, config)
    unet = UNet2DConditionModel.from_config(config)
    missing, unexpected = unet.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} does not fit the base UNet's config: missing {sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]}")
    return unet.float()


def load_checkpoint_vae(state: Mapping[str, torch.Tensor], base_config: Mapping[str, Any], image_channels: int, path: str | Path = "the checkpoint") -> AutoencoderKL:
    """The VAE a checkpoint carries under `first_stage_model.*` (RichDreamer's normal-depth model:
    images of `image_channels` channels), in the base VAE's layout otherwise, on the CPU in float32.

    Raises:
        ValueError: there is no VAE in it, or it does not fit the base config.
    """
    if not any(key.startswith("first_stage_model.") for key in state):
        raise ValueError(f"{path}: no first_stage_model.* weights (no VAE in the checkpoint)")
    config = {key: value for key, value in dict(base_config).items() if not key.startswith("_")}
    config.update(in_channels=image_channels, out_channels=image_channels)
    converted = convert_ldm_vae_checkpoint(dict(state), config)
    vae = AutoencoderKL.from_config(config)
    missing, unexpected = vae.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: its VAE does not fit the base VAE's config with {image_channels} channels: missing {sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]}")
    return vae.float()
