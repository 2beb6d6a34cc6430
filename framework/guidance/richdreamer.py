"""RichDreamer's real priors: the normal-depth-diffusion project's ND-MV and Albedo-MV checkpoints
(LDM format, MVDream's multi-view UNet on other render channels), loaded without their code.

- Normal-depth (`nd_mv_ema.ckpt`): a Stable-Diffusion-1.5-shaped multi-view UNet of 4 channels in
  and out, on the latents of its own VAE, which encodes a 4-channel image (normal map + depth
  map); both are in the one checkpoint. Text encoder, tokenizer and scheduler: SD 1.5's. The slot
  gives it [normal_map, depth_map].
- Albedo (`albedo_mv_ema.ckpt`): a Stable-Diffusion-2.1-shaped multi-view UNet on SD 2.1's VAE
  whose input is the noisy latent plus the depth map resized to the latent grid (5 channels,
  RichDreamer's `cat_d`): it draws albedo for a given geometry. The slot gives it
  [albedo_map, depth_map]; the depth conditions, only the albedo is distilled.

Both read their cameras RichDreamer's way (`camera_condition`: the world turned -90 degrees about
z, the camera at 2/3 of its distance), as its configs set them; with real weights this is
untested here (no GPU and no download on the machines that built it).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch import Tensor

from framework.guidance.condition import Condition
from framework.guidance.estimators.base import ScoreEstimator
from framework.guidance.multi_view import MultiViewLatentGuidance
from framework.guidance.mvdream_checkpoint import load_checkpoint_vae, load_mvdream_unet, read_checkpoint

RICHDREAMER_ROTATE_Z_DEG = -90.0
RICHDREAMER_DISTANCE_SCALE = 2.0 / 3.0


class _RichDreamerCheckpoint(MultiViewLatentGuidance):
    """A multi-view latent prior read from one RichDreamer checkpoint, its cameras read its way."""

    def __init__(self, pretrained: str, checkpoint: str, camera_rotate_z_deg: float = RICHDREAMER_ROTATE_Z_DEG, camera_distance_scale: float | None = RICHDREAMER_DISTANCE_SCALE, **kwargs: Any) -> None:
        self.checkpoint = str(checkpoint)
        self._state = read_checkpoint(checkpoint)  # read once: the UNet and the VAE come from it
        self.camera_rotate_z_deg = camera_rotate_z_deg
        self.camera_distance_scale = camera_distance_scale
        super().__init__(pretrained, **kwargs)
        del self._state

    unet_overrides: dict[str, Any] = {}

    def load_unet(self) -> UNet2DConditionModel:
        base_config = UNet2DConditionModel.load_config(self.pretrained, subfolder="unet")
        return load_mvdream_unet(self._state, base_config, **self.unet_overrides)

    @property
    def model_key(self) -> str:
        return f"{super().model_key}|checkpoint={self.checkpoint}"


class NormalDepthGuidance(_RichDreamerCheckpoint):
    """RichDreamer's normal-depth prior: SDS on [normal_map, depth_map] renders [B, H, W, 4].

    Args:
        pretrained: Stable Diffusion 1.5 (its text encoder, tokenizer, scheduler and the UNet and
            VAE configs the checkpoint's weights fill), e.g. "runwayml/stable-diffusion-v1-5".
        checkpoint: `nd_mv_ema.ckpt` (or a safetensors copy).
        **kwargs: see `MultiViewLatentGuidance` (resolution 256, num_views 4).
    """

    def load_vae(self) -> AutoencoderKL:
        base_config = AutoencoderKL.load_config(self.pretrained, subfolder="vae")
        return load_checkpoint_vae(self._state, base_config, image_channels=4, path=self.checkpoint)


class AlbedoGuidance(_RichDreamerCheckpoint):
    """RichDreamer's depth-conditioned albedo prior: SDS on the albedo of [albedo_map, depth_map]
    renders [B, H, W, 4], the depth map concatenated to its noisy latent.

    Args:
        pretrained: Stable Diffusion 2.1 base (VAE, text encoder, tokenizer, scheduler, UNet
            config), e.g. "stabilityai/stable-diffusion-2-1-base".
        checkpoint: `albedo_mv_ema.ckpt` (or a safetensors copy).
        **kwargs: see `MultiViewLatentGuidance`.
    """

    unet_overrides = {"in_channels": 5}

    def __init__(self, pretrained: str, checkpoint: str, **kwargs: Any) -> None:
        self._depth: Tensor | None = None
        super().__init__(pretrained, checkpoint, **kwargs)

    def __call__(self, images: Tensor, condition: Condition, step: int, estimator: ScoreEstimator | None = None) -> dict[str, Tensor]:
        if images.shape[-1] != 4:
            raise ValueError(f"the albedo prior reads [albedo_map, depth_map] (4 channels); got {images.shape[-1]} (set the slot's input)")
        size = self.resolution // 8
        depth = images[..., 3:].permute(0, 3, 1, 2).detach()
        self._depth = F.interpolate(depth, size=(size, size), mode="nearest").to(self.device) * 2.0 - 1.0
        try:
            return super().__call__(images[..., :3], condition, step, estimator)
        finally:
            self._depth = None

    def conditioning(self, condition: Condition) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """MVDream's (text, cameras) halves, each with the depth map (the same in both)."""
        if self._depth is None:
            raise ValueError("the albedo prior scores renders with their depth map: call it on [albedo_map, depth_map]")
        conditional, unconditional = super().conditioning(condition)
        return (*conditional, self._depth), (*unconditional, self._depth)

    def model_output(self, noisy: Tensor, timesteps: Tensor, *conditioning: Tensor) -> Tensor:
        text, cameras, depth = conditioning
        return super().model_output(torch.cat([noisy.to(self.device), depth.to(noisy.dtype)], dim=1), timesteps, text, cameras)[:, : noisy.shape[1]]
