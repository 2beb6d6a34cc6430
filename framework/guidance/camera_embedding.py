"""A camera embedding added to a UNet's timestep embedding: how ProlificDreamer's LoRA model sees
the camera of the render it denoises. It is zero-initialised (the adapted model starts as the
prior) and reads the camera-to-world matrix (`camera_condition`), and it is added only while
cameras are set, so the same UNet serves unconditioned calls unchanged."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from framework.guidance.camera_condition import CAMERA_FEATURES


class CameraEmbedding(nn.Module):
    """Args:
    unet: a diffusers UNet; a forward hook on its `time_embedding` adds this embedding.
    hidden: width of the MLP (default: the time embedding's).
    """

    def __init__(self, unet: Any, hidden: int | None = None) -> None:
        super().__init__()
        width = int(unet.time_embedding.linear_2.out_features)
        hidden = hidden or width
        self.mlp = nn.Sequential(nn.Linear(CAMERA_FEATURES, hidden), nn.SiLU(), nn.Linear(hidden, width))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)
        self._cameras: Tensor | None = None
        unet.time_embedding.register_forward_hook(self._add)

    def _add(self, module: nn.Module, inputs: Any, output: Tensor) -> Tensor | None:
        if self._cameras is None:
            return None
        cameras = self._cameras.to(output.device, torch.float32)
        repeats, remainder = divmod(output.shape[0], cameras.shape[0])
        if remainder:
            raise ValueError(f"camera embedding: {cameras.shape[0]} cameras for a batch of {output.shape[0]}")
        return output + self.mlp(cameras.repeat(repeats, 1)).to(output.dtype)

    @contextmanager
    def seeing(self, cameras: Tensor) -> Iterator[None]:
        """Inside the block the UNet's calls see `cameras` [B, 16] (repeated over a batch of
        several halves)."""
        self._cameras = cameras
        try:
            yield
        finally:
            self._cameras = None
