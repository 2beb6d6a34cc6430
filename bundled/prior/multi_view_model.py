"""The bundled multi-view prior: the bundled text prior inflated the way MVDream inflated Stable
Diffusion. Its UNet gains a camera embedding (diffusers' projection class embedding of the
flattened camera-to-world matrix, added to the time embedding) whose last layer starts at zero, and
its self-attention spans the 4 views of a group (`framework.guidance.multi_view_attention`, no new
weights). Everything else starts from the text prior, so before fine-tuning it is that prior.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from bundled.prior.model import PriorArchitecture, build_unet
from framework.guidance.camera_condition import CAMERA_FEATURES

NUM_VIEWS = 4
MULTI_VIEW_PRIOR_DIR = Path(__file__).resolve().parents[1] / "multi_view_prior_weights"


def build_multi_view_unet(arch: PriorArchitecture) -> UNet2DConditionModel:
    return build_unet(arch, camera_features=CAMERA_FEATURES)


def inflate_text_prior(unet: UNet2DConditionModel, text_unet: UNet2DConditionModel) -> None:
    """Copy every weight of the text prior's UNet; the camera embedding's output layer is zeroed,
    so the camera adds nothing until it is trained. A multi-view prior's UNet is copied whole,
    camera embedding included, to fine-tune it further."""
    if text_unet.config.class_embed_type is not None:
        unet.load_state_dict(text_unet.state_dict())
        return
    missing, unexpected = unet.load_state_dict(text_unet.state_dict(), strict=False)
    if unexpected or any(not key.startswith("class_embedding.") for key in missing):
        raise ValueError(f"the text prior's UNet does not match the multi-view layout: missing {missing[:4]}, unexpected {unexpected[:4]}")
    with torch.no_grad():
        unet.class_embedding.linear_2.weight.zero_()
        unet.class_embedding.linear_2.bias.zero_()
