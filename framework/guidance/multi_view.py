"""SDS under a multi-view prior (MVDream): a text-to-image model whose UNet also reads each view's
camera (a class embedding of the flattened camera-to-world matrix, diffusers'
`class_embed_type="projection"`; a UNet with three more input
channels than it denoises also reads a map of the camera's rays,
`framework.guidance.camera_rays`) and whose self-attention spans the views of a group
(`framework.guidance.multi_view_attention`). The renders of one step come in groups of
`num_views` cameras (`camera.views_per_group`), denoised together.

Both families are covered: the bundled multi-view prior (pixel space, IF layout) and MVDream's
SD-2.1 layout (latent) once converted to diffusers.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import UNet2DConditionModel
from torch import Tensor

from framework.guidance.camera_condition import CAMERA_FEATURES, camera_condition
from framework.guidance.camera_rays import with_camera_rays
from framework.guidance.condition import Condition
from framework.guidance.latent import LatentDiffusionGuidance
from framework.guidance.multi_view_attention import set_multi_view_attention
from framework.guidance.mvdream_checkpoint import load_mvdream_unet
from framework.guidance.pixel import PixelDiffusionGuidance

class _MultiViewConditioning:
    """What a multi-view prior adds to its text-to-image family: cameras in, views grouped."""

    unet: Any
    device: torch.device
    dtype: torch.dtype
    # How the cameras are read (`camera_condition`): MVDream's unless a model says otherwise.
    camera_rotate_z_deg: float = 0.0
    camera_distance_scale: float | None = None

    def _enable_multi_view(self, num_views: int) -> None:
        config = self.unet.config
        if config.class_embed_type != "projection" or config.projection_class_embeddings_input_dim != CAMERA_FEATURES:
            raise ValueError(
                f"{self.pretrained}: its UNet has no camera embedding (class_embed_type={config.class_embed_type!r}, "  # type: ignore[attr-defined]
                f"input dim {config.projection_class_embeddings_input_dim}); a multi-view prior needs class_embed_type='projection' of {CAMERA_FEATURES}"
            )
        self.num_views = num_views
        set_multi_view_attention(self.unet, num_views)

    def conditioning(self, condition: Condition) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """((text [B, L, D], cameras [B, 16]), (negative text, the same cameras)): MVDream keeps
        the cameras in the unconditional half."""
        batch = condition.cameras.batch_size
        if batch % self.num_views:
            raise ValueError(
                f"this multi-view prior denoises groups of {self.num_views} views; the step has {batch} cameras "
                f"(camera.views_per_group={self.num_views} makes each batch_size entry one group)"
            )
        conditional, unconditional = super().conditioning(condition)  # type: ignore[misc]
        cameras = camera_condition(condition.cameras, self.camera_rotate_z_deg, self.camera_distance_scale).to(self.device)
        return (conditional, cameras), (unconditional, cameras)

    def model_output(self, noisy: Tensor, timesteps: Tensor, *conditioning: Tensor) -> Tensor:
        text, cameras = conditioning
        cameras = cameras.to(text.dtype)
        inputs = with_camera_rays(noisy.to(self.device), cameras, self.unet.config.in_channels)
        prediction = self.unet(inputs, timesteps, encoder_hidden_states=text, class_labels=cameras).sample
        return prediction[:, : noisy.shape[1]]


class MultiViewPixelGuidance(_MultiViewConditioning, PixelDiffusionGuidance):
    """The bundled multi-view prior (IF stage-I layout with a camera embedding).

    Args:
        num_views: views per group (MVDream: 4).
        **kwargs: see `PixelDiffusionGuidance`.
    """

    def __init__(self, pretrained: str, num_views: int = 4, **kwargs: Any) -> None:
        kwargs.setdefault("view_dependent", False)
        super().__init__(pretrained, **kwargs)
        self._enable_multi_view(num_views)


class MultiViewLatentGuidance(_MultiViewConditioning, LatentDiffusionGuidance):
    """MVDream's SD-2.1 multi-view model (VAE latents, 256 px).

    Args:
        pretrained: a diffusers folder or hub id: SD 2.1 base (whose VAE, text encoder, tokenizer
            and scheduler MVDream kept) when `unet_checkpoint` is given, else a folder whose UNet
            already has the camera embedding.
        unet_checkpoint: MVDream's original LDM checkpoint (`sd-v2.1-base-4view.pt`, or a
            safetensors copy), converted on load (`framework.guidance.mvdream_checkpoint`).
        num_views: views per group (MVDream: 4).
        **kwargs: see `LatentDiffusionGuidance`.
    """

    def __init__(self, pretrained: str, unet_checkpoint: str | None = None, num_views: int = 4, resolution: int = 256, **kwargs: Any) -> None:
        self.unet_checkpoint = unet_checkpoint
        kwargs.setdefault("view_dependent", False)
        super().__init__(pretrained, resolution=resolution, **kwargs)
        self._enable_multi_view(num_views)

    def load_unet(self) -> UNet2DConditionModel:
        if self.unet_checkpoint is None:
            return super().load_unet()
        base_config = UNet2DConditionModel.load_config(self.pretrained, subfolder="unet")
        return load_mvdream_unet(self.unet_checkpoint, base_config)
