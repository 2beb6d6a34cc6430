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
from framework.guidance.camera_rays import RAY_CHANNELS

NUM_VIEWS = 4
BUNDLED_DIR = Path(__file__).resolve().parents[1]
MULTI_VIEW_PRIOR_DIR = BUNDLED_DIR / "multi_view_prior_weights"
# RichDreamer's two priors, by the domain they learnt.
DOMAIN_PRIOR_DIRS = {"colour": MULTI_VIEW_PRIOR_DIR, "normal_depth": BUNDLED_DIR / "normal_depth_prior_weights", "albedo": BUNDLED_DIR / "albedo_prior_weights"}


def build_multi_view_unet(arch: PriorArchitecture, channels: int = 3, camera_rays: bool = False) -> UNet2DConditionModel:
    """A multi-view UNet denoising `channels`-channel images; with `camera_rays`, it also reads each
    view's ray map (`framework.guidance.camera_rays`) as input channels after the image's."""
    in_channels = channels + (RAY_CHANNELS if camera_rays else 0)
    return build_unet(arch, in_channels=in_channels, camera_features=CAMERA_FEATURES, out_channels=channels)


def reads_camera_rays(unet: UNet2DConditionModel) -> bool:
    """Whether a multi-view UNet takes ray-map channels beside the image it denoises."""
    return unet.config.in_channels - unet.config.out_channels == RAY_CHANNELS


def _widened(state: dict[str, torch.Tensor], unet: UNet2DConditionModel) -> dict[str, torch.Tensor]:
    """`state` with its image channels (conv_out's outputs, conv_in's first inputs) and its ray
    channels (conv_in's last inputs, if any) each zero-padded to `unet`'s; the others as they are.

    Raises:
        ValueError: if `unet` has fewer image or ray channels than the source.
    """
    target = unet.state_dict()
    source_image = state["conv_out.weight"].shape[0]
    source_rays = state["conv_in.weight"].shape[1] - source_image
    image, rays = unet.config.out_channels, unet.config.in_channels - unet.config.out_channels
    if source_image > image or source_rays > rays:
        raise ValueError(
            f"the source prior has {source_image} image and {source_rays} ray channels, the new UNet {image} and {rays}; a prior can only gain channels"
        )
    widened = dict(state)
    for key in ("conv_out.weight", "conv_out.bias"):
        widened[key] = state[key].new_zeros(target[key].shape)
        widened[key][:source_image] = state[key]
    widened["conv_in.weight"] = state["conv_in.weight"].new_zeros(target["conv_in.weight"].shape)
    widened["conv_in.weight"][:, :source_image] = state["conv_in.weight"][:, :source_image]
    widened["conv_in.weight"][:, image : image + source_rays] = state["conv_in.weight"][:, source_image:]
    return widened


def inflate_text_prior(unet: UNet2DConditionModel, text_unet: UNet2DConditionModel) -> None:
    """Copy every weight of the text prior's UNet; the camera embedding's output layer is zeroed,
    so the camera adds nothing until it is trained. A multi-view prior's UNet is copied whole,
    camera embedding included, to fine-tune it further. Image or ray channels `unet` has beyond the
    source's start at zero (a colour prior made into the normal-depth prior, or made to read rays)."""
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
