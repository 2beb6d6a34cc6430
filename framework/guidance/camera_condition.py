"""The camera as MVDream's UNet reads it (its camera embedding's input), and the variant RichDreamer's
models were trained on."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from framework.cameras.camera import CameraBatch

CAMERA_FEATURES = 16


def camera_condition(cameras: CameraBatch, rotate_z_deg: float = 0.0, distance_scale: float | None = None) -> Tensor:
    """[B, 16] MVDream's camera input: the OpenGL camera-to-world matrix of a z-up world with the
    camera moved onto the unit sphere (threestudio's `normalize_camera`), flattened row by row.

    RichDreamer's models read it with the world turned about z first (its `rotate_z`: -90) and
    the camera at `distance_scale` times its distance instead of on the unit sphere (its `rel_x2`:
    twice a relative distance of 0.8-1.0; here 2/3 of 2.6-3.0, the same 1.7-2.0)."""
    c2w = cameras.c2w.clone()
    if rotate_z_deg:
        angle = math.radians(rotate_z_deg)
        rotation = torch.eye(4, dtype=c2w.dtype, device=c2w.device)
        rotation[:2, :2] = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=c2w.dtype)
        c2w = rotation @ c2w
    translation = c2w[:, :3, 3]
    length = 1.0 if distance_scale is None else distance_scale * translation.norm(dim=-1, keepdim=True)
    c2w[:, :3, 3] = F.normalize(translation, dim=-1) * length
    return c2w.reshape(-1, CAMERA_FEATURES)
