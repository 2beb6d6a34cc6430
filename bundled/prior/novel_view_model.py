"""Architecture of the bundled novel-view prior: Zero-1-to-3's diffusers layout in pixel space.

Zero-1-to-3 is Stable Diffusion fine-tuned to draw an object from a new camera given one view of
it: the input view's VAE latent is concatenated to the noisy sample, and its CLIP image embedding,
joined with the relative pose, goes through a linear projection into the cross-attention. The
bundled model keeps every part and key name but works on 64 px pixels (no VAE): the input view is
concatenated to the noisy image (6 input channels), the image encoder is a small CLIP vision
transformer, and the UNet starts from the bundled text prior's (as Zero-1-to-3 started from SD).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from torch import nn
from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModelWithProjection

from bundled.prior.model import PriorArchitecture, build_unet
from framework.guidance.camera_projection import camera_projection, save_camera_projection
from framework.guidance.novel_view import CLIP_MEAN, CLIP_STD
from framework.utils.atomic import atomic_directory

NOVEL_VIEW_PRIOR_DIR = Path(__file__).resolve().parents[1] / "novel_view_prior_weights"


@dataclass(frozen=True)
class NovelViewArchitecture:
    unet: PriorArchitecture = field(default_factory=PriorArchitecture)
    image_width: int = 128  # the CLIP vision transformer's width
    image_layers: int = 4
    image_heads: int = 4
    patch_size: int = 8

    @property
    def embedding_dim(self) -> int:
        """The image embedding's width, which is the UNet's cross-attention width."""
        return self.unet.block_channels[-1]


def build_unet_for_views(arch: NovelViewArchitecture) -> UNet2DConditionModel:
    """The denoiser: noisy image and input view (3 + 3 channels), cross-attending to one token."""
    return build_unet(arch.unet, in_channels=6, text_conditioned=False)


def build_image_encoder(arch: NovelViewArchitecture) -> CLIPVisionModelWithProjection:
    config = CLIPVisionConfig(
        hidden_size=arch.image_width,
        intermediate_size=2 * arch.image_width,
        num_hidden_layers=arch.image_layers,
        num_attention_heads=arch.image_heads,
        image_size=arch.unet.resolution,
        patch_size=arch.patch_size,
        projection_dim=arch.embedding_dim,
    )
    return CLIPVisionModelWithProjection(config)


def build_feature_extractor(arch: NovelViewArchitecture) -> CLIPImageProcessorPil:
    size = arch.unet.resolution
    return CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size}, image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))


def build_projection(arch: NovelViewArchitecture) -> nn.Linear:
    return camera_projection(arch.embedding_dim)


def warm_start_from_text_prior(unet: UNet2DConditionModel, text_unet: UNet2DConditionModel) -> None:
    """Copy the text prior's denoiser into the novel-view one, as Zero-1-to-3 started from SD:
    every shared weight, the input convolution's extra (input view) channels at zero, and
    without the text-only parts (T5 projection, pooled text embedding)."""
    source = {k: v for k, v in text_unet.state_dict().items() if not k.startswith(("encoder_hid_proj.", "add_embedding."))}
    conv_in = source["conv_in.weight"]
    widened = torch.zeros_like(unet.conv_in.weight)
    widened[:, : conv_in.shape[1]] = conv_in
    source["conv_in.weight"] = widened
    missing, unexpected = unet.load_state_dict(source, strict=False)
    if missing or unexpected:
        raise ValueError(f"the text prior's UNet does not match the novel-view layout: missing {missing[:4]}, unexpected {unexpected[:4]}")


def save_novel_view_prior(
    folder: str | Path,
    unet: UNet2DConditionModel,
    image_encoder: CLIPVisionModelWithProjection,
    projection: nn.Linear,
    scheduler: DDPMScheduler,
    feature_extractor: CLIPImageProcessorPil,
    provenance: dict,
) -> None:
    """Write the model atomically as fp16 safetensors in Zero-1-to-3's diffusers folder layout
    (without the VAE: a pixel-space model)."""
    with atomic_directory(folder) as tmp:
        for name, module in (("unet", unet), ("image_encoder", image_encoder)):
            module.to(torch.float16).save_pretrained(tmp / name, safe_serialization=True)
            module.to(torch.float32)
        save_camera_projection(projection, tmp)
        scheduler.save_pretrained(tmp / "scheduler")
        feature_extractor.save_pretrained(tmp / "feature_extractor")
        index = {
            "_class_name": "BundledNovelViewPrior",
            "unet": ["diffusers", "UNet2DConditionModel"],
            "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
            "cc_projection": ["bundled", "CCProjection"],
            "scheduler": ["diffusers", "DDPMScheduler"],
            "feature_extractor": ["transformers", "CLIPImageProcessor"],
        }
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")


def architecture_record(arch: NovelViewArchitecture) -> dict:
    """The architecture as plain JSON (stored in checkpoints and provenance)."""
    return asdict(arch)
