"""The bundled multi-view prior: the bundled text prior inflated the way MVDream inflated Stable
Diffusion. Its UNet gains a camera embedding (diffusers' projection class embedding of the
flattened camera-to-world matrix, added to the time embedding) whose last layer starts at zero, and
its self-attention spans the 4 views of a group (`framework.guidance.multi_view_attention`, no new
weights). Everything else starts from the text prior, so before fine-tuning it is that prior.

RichDreamer's priors are multi-view priors of other domains: the normal-depth prior denoises 4
channels (a normal map and a depth map), so its first and last convolutions gain a channel that
starts at zero (the depth is ignored on the way in and predicted as zero until trained).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from bundled.prior.model import PriorArchitecture, build_unet
from framework.guidance.camera_condition import CAMERA_FEATURES

NUM_VIEWS = 4
BUNDLED_DIR = Path(__file__).resolve().parents[1]
MULTI_VIEW_PRIOR_DIR = BUNDLED_DIR / "multi_view_prior_weights"
# RichDreamer's two priors, by the domain they learnt.
DOMAIN_PRIOR_DIRS = {"colour": MULTI_VIEW_PRIOR_DIR, "normal_depth": BUNDLED_DIR / "normal_depth_prior_weights", "albedo": BUNDLED_DIR / "albedo_prior_weights"}
CHANNEL_LAYERS = ("conv_in.weight", "conv_out.weight", "conv_out.bias")


def build_multi_view_unet(arch: PriorArchitecture, channels: int = 3) -> UNet2DConditionModel:
    """A multi-view UNet denoising `channels`-channel images."""
    return build_unet(arch, in_channels=channels, camera_features=CAMERA_FEATURES, out_channels=channels)


def _widened(state: dict[str, torch.Tensor], unet: UNet2DConditionModel) -> dict[str, torch.Tensor]:
    """`state` with its image channels (conv_in's inputs, conv_out's outputs) zero-padded to
    `unet`'s; the others as they are."""
    target = unet.state_dict()
    widened = dict(state)
    for key in CHANNEL_LAYERS:
        source, wanted = state[key], target[key]
        if source.shape == wanted.shape:
            continue
        dim = 1 if key == "conv_in.weight" else 0
        if source.shape[dim] > wanted.shape[dim] or source.dim() != wanted.dim():
            raise ValueError(f"{key}: the source has {source.shape[dim]} image channels, the new UNet {wanted.shape[dim]}; a prior can only gain channels")
        padded = source.new_zeros(wanted.shape)
        padded.narrow(dim, 0, source.shape[dim]).copy_(source)
        widened[key] = padded
    return widened


def inflate_text_prior(unet: UNet2DConditionModel, text_unet: UNet2DConditionModel) -> None:
    """Copy every weight of the text prior's UNet; the camera embedding's output layer is zeroed,
    so the camera adds nothing until it is trained. A multi-view prior's UNet is copied whole,
    camera embedding included, to fine-tune it further. Channels `unet` has beyond the source's
    start at zero (a colour prior made into the normal-depth prior)."""
    state = _widened(text_unet.state_dict(), unet)
    if text_unet.config.class_embed_type is not None:
        unet.load_state_dict(state)
        return
    missing, unexpected = unet.load_state_dict(state, strict=False)
    if unexpected or any(not key.startswith("class_embedding.") for key in missing):
        raise ValueError(f"the text prior's UNet does not match the multi-view layout: missing {missing[:4]}, unexpected {unexpected[:4]}")
    with torch.no_grad():
        unet.class_embedding.linear_2.weight.zero_()
        unet.class_embedding.linear_2.bias.zero_()
