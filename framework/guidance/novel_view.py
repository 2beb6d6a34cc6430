"""SDS under a novel-view prior: Zero-1-to-3 and Stable Zero123 (latent, with a VAE) and the bundled
novel-view prior (pixel space, the same folder layout without the VAE).

The condition is the reference view, not text: its image goes in twice, as the image embedding
(CLIP vision encoder, joined with each camera's pose relative to the reference camera, through the
camera projection, as one cross-attention token) and concatenated to the noisy sample (its VAE
latent's mode, unscaled as Zero-1-to-3 was trained, or its pixels). Classifier-free guidance
zeroes both, as the model was trained to read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from torch import Tensor
from transformers import CLIPVisionModelWithProjection

from framework.guidance.camera_projection import POSE_CONVENTIONS, load_camera_projection, relative_pose
from framework.guidance.condition import Condition
from framework.guidance.sds import ScoreDistillation, load_component

# OpenAI CLIP's normalisation, for folders whose feature extractor does not record one.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_SUBFOLDERS = ("unet", "image_encoder", "scheduler", "vae", "feature_extractor", "cc_projection", "clip_camera_projection")


def clip_pixels(images: Tensor, size: int, mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD) -> Tensor:
    """Images [B, 3, H, W] in [0, 1] as a CLIP vision encoder's input: resized to `size` (bicubic,
    as Zero-1-to-3's own preprocessing) and normalised."""
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=True).clamp(0.0, 1.0)
    mean_t = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean_t) / std_t


def resolve_folder(pretrained: str) -> Path:
    """A local folder as is; a hub id downloaded (only the parts this guidance reads)."""
    if Path(pretrained).is_dir():
        return Path(pretrained)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(pretrained, allow_patterns=["model_index.json", *(f"{name}/*" for name in _SUBFOLDERS)]))
    except Exception as error:  # noqa: BLE001 - any hub failure becomes one line
        raise FileNotFoundError(f"cannot load a novel-view prior from {pretrained!r}: not a local folder and not reachable on the hub ({type(error).__name__})") from None


class NovelViewGuidance(ScoreDistillation):
    """Args:
        pretrained: hub id (e.g. "kxic/zero123-xl") or local folder: unet/, image_encoder/,
            scheduler/, cc_projection/ or clip_camera_projection/, and vae/ for a latent model.
        pose_convention: "zero123" (the last pose entry is the change of camera distance) or
            "stable_zero123" (the input view's polar angle).
        resolution: latent models: renders are resized to this before the VAE (Zero-1-to-3: 256).
        **kwargs: see `ScoreDistillation` (the text arguments are unused: the prior reads no text).
    """

    def __init__(self, pretrained: str, pose_convention: str = "zero123", resolution: int = 256, **kwargs: Any) -> None:
        if pose_convention not in POSE_CONVENTIONS:
            raise ValueError(f"pose_convention={pose_convention!r}: expected one of {POSE_CONVENTIONS}")
        kwargs["view_dependent"] = False
        super().__init__(**kwargs)
        self.pretrained = str(pretrained)
        self.pose_convention = pose_convention
        folder = str(resolve_folder(self.pretrained))
        self.unet = load_component(UNet2DConditionModel, folder, "unet")
        self.image_encoder = load_component(CLIPVisionModelWithProjection, folder, "image_encoder")
        self.scheduler = load_component(DDPMScheduler, folder, "scheduler")
        self.projection = load_camera_projection(folder)
        self.vae = load_component(AutoencoderKL, folder, "vae") if (Path(folder) / "vae").is_dir() else None
        self.mean, self.std = _normalisation(Path(folder))
        for module in (self.unet, self.image_encoder, self.projection):
            module.requires_grad_(False).eval().to(self.device, self.dtype)
        if self.vae is not None:
            self.vae.requires_grad_(False).eval().to(self.device, torch.float32)
            self.resolution = resolution
        else:
            self.resolution = int(self.unet.config.sample_size)
        self.clip_denoised = self.vae is None
        self._reference_image: Tensor | None = None  # compared by value: a batch moved to the GPU is a new tensor each step
        self._reference_inputs: tuple[Tensor, Tensor] | None = None

    @property
    def model_key(self) -> str:
        return f"novel-view:{self.pretrained}"

    def encode_text(self, prompts: list[str]) -> Tensor:
        raise NotImplementedError("a novel-view prior reads no text")

    # --- images and samples -------------------------------------------------------------------
    def _resize(self, rgb: Tensor) -> Tensor:
        if rgb.shape[-2:] != (self.resolution, self.resolution):
            rgb = F.interpolate(rgb, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        return rgb

    def encode_images(self, rgb: Tensor) -> Tensor:
        pixels = self._resize(rgb).to(self.device) * 2.0 - 1.0
        if self.vae is None:
            return pixels
        return self.vae.encode(pixels.float()).latent_dist.mean * self.vae.config.scaling_factor

    def as_sample(self, images: Tensor) -> Tensor:
        if self.vae is not None:
            raise ValueError("encoded slots need a pixel-space novel-view prior; this one has a VAE")
        return self.encode_images(images)

    @torch.no_grad()
    def decode_samples(self, x0: Tensor, size: tuple[int, int]) -> Tensor:
        if self.vae is not None:
            x0 = self.vae.decode(x0.to(self.device, torch.float32) / self.vae.config.scaling_factor).sample
        images = (x0.float() * 0.5 + 0.5).clamp(0.0, 1.0)
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False) if images.shape[-2:] != size else images

    # --- the condition ------------------------------------------------------------------------
    @torch.no_grad()
    def reference_inputs(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """The reference image [1, H, W, 3] in [0, 1] -> (its image embedding [1, D], the sample
        concatenated to every noisy input [1, C, h, w]), computed again only when the image changes."""
        cached = self._reference_image
        if cached is None or cached.shape != image.shape or cached.device != image.device or not torch.equal(cached, image):
            chw = image.permute(0, 3, 1, 2).to(self.device, torch.float32)
            pixels = clip_pixels(chw, int(self.image_encoder.config.image_size), self.mean, self.std)
            embedding = self.image_encoder(pixels.to(self.dtype)).image_embeds.float()
            concat = self._resize(chw) * 2.0 - 1.0
            if self.vae is not None:
                concat = self.vae.encode(concat).latent_dist.mode()
            self._reference_image, self._reference_inputs = image.detach().clone(), (embedding, concat)
        return self._reference_inputs  # type: ignore[return-value]

    def conditioning(self, condition: Condition) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """((tokens [B, 1, D], concatenated sample [B, C, h, w]), the same zeroed)."""
        if condition.reference is None:
            raise ValueError(f"{type(self).__name__} is conditioned on an image: pass image=<file>")
        embedding, concat = self.reference_inputs(condition.reference.image)
        pose = relative_pose(condition.cameras, condition.reference.cameras, self.pose_convention).to(self.device, torch.float32)
        batch = condition.cameras.batch_size
        joined = torch.cat([embedding.expand(batch, -1), pose], dim=-1)
        tokens = self.projection(joined.to(self.dtype)).float()[:, None]
        concat = concat.expand(batch, -1, -1, -1)
        return (tokens, concat), (torch.zeros_like(tokens), torch.zeros_like(concat))

    def model_output(self, noisy: Tensor, timesteps: Tensor, *conditioning: Tensor) -> Tensor:
        tokens, concat = conditioning
        return self.unet(torch.cat([noisy.to(self.device), concat], dim=1), timesteps, encoder_hidden_states=tokens).sample


def _normalisation(folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    config = folder / "feature_extractor" / "preprocessor_config.json"
    if not config.is_file():
        return CLIP_MEAN, CLIP_STD
    values = json.loads(config.read_text())
    return tuple(values.get("image_mean", CLIP_MEAN)), tuple(values.get("image_std", CLIP_STD))
