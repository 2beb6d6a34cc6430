"""MVDream's 3D self-attention on a diffusers UNet: the self-attention of every transformer block
attends across the views of a group, so four views of one object are denoised as one image.

The UNet sees B = G * V images, the V views of each group consecutive. Each self-attention layer
joins a group's tokens ([G * V, N, C] -> [G, V * N, C]), attends, and splits them again; the
weights are the 2D model's, which is how MVDream inflates SD. Cross-attention (to text) and every
other layer stay per view. With V = 1 it is plain 2D attention, so one model denoises single
images and view groups alike.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0


class MultiViewAttnProcessor:
    """Self-attention over the `num_views` consecutive images of each group (see the module)."""

    def __init__(self, num_views: int = 4) -> None:
        if num_views < 1:
            raise ValueError(f"num_views={num_views} must be at least 1")
        self.num_views = num_views
        self.inner = AttnProcessor2_0()

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        views = self.num_views
        if encoder_hidden_states is not None or views == 1 or hidden_states.ndim != 3:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        images, tokens, channels = hidden_states.shape
        if images % views:
            raise ValueError(f"a multi-view prior denoises groups of {views} views, got a batch of {images} images")
        joined = hidden_states.reshape(images // views, views * tokens, channels)
        return self.inner(attn, joined, None, attention_mask, temb).reshape(images, tokens, channels)


def set_multi_view_attention(unet: UNet2DConditionModel, num_views: int) -> None:
    """Every self-attention of `unet` attends across groups of `num_views` (1: per image)."""
    processors = {}
    for name in unet.attn_processors:
        processors[name] = MultiViewAttnProcessor(num_views) if name.endswith("attn1.processor") else AttnProcessor2_0()
    unet.set_attn_processor(processors)
