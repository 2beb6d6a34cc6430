"""The camera as MVDream's UNet reads it (its camera embedding's input)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from framework.cameras.camera import CameraBatch

CAMERA_FEATURES = 16


def camera_condition(cameras: CameraBatch) -> Tensor:
    """[B, 16] MVDream's camera input: the OpenGL camera-to-world matrix of a z-up world with the
    camera moved onto the unit sphere (threestudio's `normalize_camera`), flattened row by row."""
    c2w = cameras.c2w.clone()
    c2w[:, :3, 3] = F.normalize(c2w[:, :3, 3], dim=-1)
    return c2w.reshape(-1, CAMERA_FEATURES)
