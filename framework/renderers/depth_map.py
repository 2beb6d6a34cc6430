"""Depth maps as a prior sees them: near is bright, the background black.

RichDreamer's normal-depth prior reads a normalised disparity beside the normal map. Here a
surface's depth along the view axis is measured from the depth of the scene's centre (the world
origin) and scaled by the scene's radius, so a point at the origin maps to 0.5, one `radius`
nearer to 1 and one `radius` farther to 0, whatever the camera's distance: the prior learns
shapes, not distances. The background is 0 (infinitely far). Both the framework's renders and the
bundled world's training images use this one convention.
"""

from __future__ import annotations

from torch import Tensor

from framework.cameras.camera import CameraBatch

SCENE_RADIUS = 1.0


def depth_map(depth: Tensor, coverage: Tensor, cameras: CameraBatch, radius: float = SCENE_RADIUS) -> Tensor:
    """[B, H, W, 1] in [0, 1]: camera-space `depth` [B, H, W, 1] (along the view axis, any value
    where nothing is seen) of covered pixels, 0 elsewhere; `coverage` [B, H, W, 1] in [0, 1]
    blends antialiased edges."""
    if radius <= 0:
        raise ValueError(f"radius={radius} must be positive")
    # The origin's depth along each camera's view axis (OpenGL: the camera looks down its -z).
    centre_depth = (cameras.position * cameras.c2w[:, :3, 2]).sum(dim=-1).to(depth).view(-1, 1, 1, 1)
    values = (0.5 + (centre_depth - depth) / (2.0 * radius)).clamp(0.0, 1.0)
    return values * coverage
