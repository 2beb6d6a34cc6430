"""Lights as configured objects: whoever shades, bakes or evaluates under a light is given one.

`CameraLight` is the light of the bundled procedural world (its prior's training images, the
ground truth): a directional light that follows the camera, raised above it and to its left, with
an ambient share. A prior's config names the light its images were lit by (`image_light`); a
prior trained on photographs names none.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from framework.cameras.camera import CameraBatch


class CameraLight:
    """Args:
    up: how far the light sits above the view direction (in units of the camera's up axis).
    right: how far to the camera's right (negative: to its left).
    ambient: the share of light every surface gets whatever its normal.
    """

    def __init__(self, up: float = 0.6, right: float = -0.3, ambient: float = 0.35) -> None:
        if not 0.0 <= ambient <= 1.0:
            raise ValueError(f"CameraLight ambient={ambient}: must be in [0, 1]")
        self.up = up
        self.right = right
        self.ambient = ambient

    def directions(self, cameras: CameraBatch) -> Tensor:
        """[B, 3] unit directions towards the light, one per camera."""
        c2w = cameras.c2w
        towards_camera = c2w[:, :3, 2]  # OpenGL: the camera looks down -z
        return F.normalize(towards_camera + self.up * c2w[:, :3, 1] + self.right * c2w[:, :3, 0], dim=-1)

    def brightness(self, normals: Tensor, directions: Tensor) -> Tensor:
        """[..., 1] what an albedo is multiplied by, for unit `normals` and light `directions`
        (broadcastable [..., 3])."""
        return self.ambient + (1 - self.ambient) * (normals * directions).sum(-1, keepdim=True).clamp(min=0.0)
