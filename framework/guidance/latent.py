"""SDS under a latent text-to-image model (Stable Diffusion 1.x / 2.x: VAE, CLIP text encoder,
UNet). Renders are encoded by the VAE with gradients; the VAE stays in fp32 (fp16 VAEs overflow)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from torch import Tensor
from transformers import AutoTokenizer, CLIPTextModel

from framework.guidance.sds import ScoreDistillation, load_component


class LatentDiffusionGuidance(ScoreDistillation):
    """Args:
        pretrained: hub id (e.g. "stabilityai/stable-diffusion-2-1-base") or local folder.
        resolution: renders are resized to this before the VAE; a multiple of 8.
        **kwargs: see `ScoreDistillation`.
    """

    def __init__(self, pretrained: str, resolution: int = 512, **kwargs: Any) -> None:
        if resolution % 8 != 0 or resolution <= 0:
            raise ValueError(f"resolution={resolution}: a latent diffusion model needs a positive multiple of 8")
        super().__init__(**kwargs)
        self.pretrained = str(pretrained)
        self.resolution = resolution
        self.tokenizer = load_component(AutoTokenizer, self.pretrained, "tokenizer")
        self.text_encoder = load_component(CLIPTextModel, self.pretrained, "text_encoder")
        self.unet = self.load_unet()
        self.vae = self.load_vae()
        self.scheduler = load_component(DDPMScheduler, self.pretrained, "scheduler")
        for module in (self.text_encoder, self.unet):
            module.requires_grad_(False).eval().to(self.device, self.dtype)
        self.vae.requires_grad_(False).eval().to(self.device, torch.float32)
        self.max_tokens = min(int(self.tokenizer.model_max_length), 77)

    def load_unet(self) -> UNet2DConditionModel:
        """The denoiser: the folder's own (a subclass may read another checkpoint)."""
        return load_component(UNet2DConditionModel, self.pretrained, "unet")

    def load_vae(self) -> AutoencoderKL:
        """The VAE: the folder's own (a subclass may read another checkpoint)."""
        return load_component(AutoencoderKL, self.pretrained, "vae")

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> Tensor:
        ids = self.tokenizer(prompts, padding="max_length", max_length=self.max_tokens, truncation=True, return_tensors="pt").input_ids
        return self.text_encoder(ids.to(self.device)).last_hidden_state

    def encode_images(self, rgb: Tensor) -> Tensor:
        rgb = F.interpolate(rgb, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        latents = self.vae.encode(rgb.to(self.device, torch.float32) * 2.0 - 1.0).latent_dist.mean
        return latents * self.vae.config.scaling_factor

    def as_sample(self, images: Tensor) -> Tensor:
        """Channels in [0, 1] as a latent sample with no VAE: resized to the latent grid, mapped
        to [-1, 1] (Fantasia3D's normal map and mask; they must be as many as the UNet's)."""
        size = self.resolution // 8
        return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).to(self.device) * 2.0 - 1.0

    @torch.no_grad()
    def decode_samples(self, x0: Tensor, size: tuple[int, int]) -> Tensor:
        images = self.vae.decode(x0.to(self.device, torch.float32) / self.vae.config.scaling_factor).sample
        images = (images * 0.5 + 0.5).clamp(0.0, 1.0)
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False)

    def model_output(self, noisy: Tensor, timesteps: Tensor, conditioning: Tensor) -> Tensor:
        return self.unet(noisy.to(self.device), timesteps, encoder_hidden_states=conditioning).sample
