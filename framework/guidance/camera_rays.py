"""Camera rays as image channels: a multi-view prior's second way of reading each view's camera.

MVDream's camera embedding is added to the time embedding, so it shifts the features of every
pixel alike; the tiny bundled UNet learnt the elevation from it but never the azimuth
(docs/prior_notes.md). A map of each pixel's world-space ray direction, concatenated to the noisy
view, puts the camera where the convolutions read it, pixel by pixel. A UNet that takes
`RAY_CHANNELS` more input channels than the image it denoises reads them there; its ray channels
start at zero, so before training it is the prior it was made from.

The map is built from the camera condition (`camera_condition`'s [B, 16] rows), which every caller
of such a UNet already has, at a nominal field of view: only the rotation matters.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from framework.cameras.camera import ray_directions
from framework.guidance.camera_condition import CAMERA_FEATURES

RAY_CHANNELS = 3
RAY_MAP_FOVY_DEG = 42.0  # the middle of the camera sampler's range


def camera_ray_map(cameras: Tensor, size: int) -> Tensor:
    """[B, 3, size, size] unit world-space ray directions of the cameras [B, 16]; an all-zero row
    (a single image without a camera) gives an all-zero map."""
    if cameras.ndim != 2 or cameras.shape[1] != CAMERA_FEATURES:
        raise ValueError(f"camera_ray_map: cameras must be [B, {CAMERA_FEATURES}], got {tuple(cameras.shape)}")
    focal = torch.full((cameras.shape[0],), 0.5 * size / math.tan(math.radians(0.5 * RAY_MAP_FOVY_DEG)), dtype=cameras.dtype, device=cameras.device)
    return ray_directions(cameras.view(-1, 4, 4), focal, size, size).permute(0, 3, 1, 2)


def with_camera_rays(noisy: Tensor, cameras: Tensor | None, in_channels: int) -> Tensor:
    """`noisy` [B, C, H, W] as a UNet of `in_channels` inputs reads it: as it is, or with the
    cameras' ray map after it when the UNet takes `RAY_CHANNELS` more.

    Raises:
        ValueError: naming both counts when the UNet takes another number of extra channels, or
            wants rays and no cameras are given.
    """
    missing = in_channels - noisy.shape[1]
    if missing == 0:
        return noisy
    if missing != RAY_CHANNELS:
        raise ValueError(f"the UNet takes {in_channels} input channels and is given {noisy.shape[1]}: only {RAY_CHANNELS} camera-ray channels can make up the difference")
    if cameras is None:
        raise ValueError(f"the UNet takes {in_channels} input channels, {RAY_CHANNELS} of them camera rays: give the cameras")
    return torch.cat([noisy, camera_ray_map(cameras.to(noisy.device, noisy.dtype), noisy.shape[-1])], dim=1)
