"""Camera rays as image channels: the map, and when a UNet reads it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from framework.cameras.distribution import OrbitDistribution
from framework.guidance.camera_condition import camera_condition
from framework.guidance.camera_rays import RAY_CHANNELS, camera_ray_map, with_camera_rays


def test_the_ray_map_looks_at_the_object_and_turns_with_the_camera():
    cameras = OrbitDistribution().sample(6, 16, torch.Generator().manual_seed(0))
    rays = camera_ray_map(camera_condition(cameras), 16)
    assert rays.shape == (6, 3, 16, 16)
    torch.testing.assert_close(rays.norm(dim=1), torch.ones(6, 16, 16))
    centre = rays[:, :, 7:9, 7:9].mean(dim=(2, 3))
    torch.testing.assert_close(F.normalize(centre, dim=-1), -F.normalize(cameras.position, dim=-1), atol=1e-3, rtol=0)
    # The top row looks further up the world's z than the bottom row.
    assert (rays[:, 2, 0] > rays[:, 2, -1]).all()
    assert not camera_ray_map(torch.zeros(2, 16), 8).any()  # a single image, no camera
    with pytest.raises(ValueError, match=r"cameras must be \[B, 16\], got \(2, 4, 4\)"):
        camera_ray_map(torch.zeros(2, 4, 4), 8)


def test_rays_are_added_only_for_a_unet_that_takes_them():
    noisy, cameras = torch.randn(2, 3, 8, 8), camera_condition(OrbitDistribution().sample(2, 8, torch.Generator().manual_seed(1)))
    assert with_camera_rays(noisy, cameras, 3) is noisy
    both = with_camera_rays(noisy, cameras, 3 + RAY_CHANNELS)
    assert torch.equal(both[:, :3], noisy) and torch.equal(both[:, 3:], camera_ray_map(cameras, 8))
    with pytest.raises(ValueError, match="takes 5 input channels and is given 3"):
        with_camera_rays(noisy, cameras, 5)
    with pytest.raises(ValueError, match="give the cameras"):
        with_camera_rays(noisy, None, 6)
