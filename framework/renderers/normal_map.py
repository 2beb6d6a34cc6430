"""Normal maps as a prior sees them: camera-space normals as colours, on white.

Normals are turned into the camera's frame (OpenGL: +x right, +y up, +z towards the viewer) and
mapped from [-1, 1] to [0, 1], so a surface facing the camera is (0.5, 0.5, 1.0) whatever the
camera's orbit: the prior learns shapes, not orientations. The background is white, like the
world's colour renders. Fantasia3D's geometry stage and the bundled prior's normal-map domain both
use this one convention.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from framework.cameras.camera import CameraBatch


def camera_space_normals(normals: Tensor, cameras: CameraBatch) -> Tensor:
    """World normals [B, ..., 3] in each camera's OpenGL frame [B, ..., 3]."""
    rotation = cameras.c2w[:, :3, :3].to(normals)  # columns: camera axes in world coordinates
    flat = normals.reshape(normals.shape[0], -1, 3)
    return (flat @ rotation).reshape(normals.shape)


def normal_map(normals: Tensor, coverage: Tensor, cameras: CameraBatch) -> Tensor:
    """[B, H, W, 3] colours in [0, 1]: world `normals` [B, H, W, 3] (any length; zero where
    nothing is seen) of covered pixels, white elsewhere; `coverage` [B, H, W, 1] in [0, 1] blends
    antialiased edges."""
    colours = (F.normalize(camera_space_normals(normals, cameras), dim=-1) + 1.0) / 2.0
    return colours * coverage + (1.0 - coverage)
