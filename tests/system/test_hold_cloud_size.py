"""HoldCloudSize: the centres keep the RMS radius of the first held step, only in the named stages,
and the radius is checkpointed."""

from __future__ import annotations

import pytest
import torch

from framework.callbacks.hold_cloud_size import HoldCloudSize, rms_radius
from framework.representations.gaussians import GaussianModel
from tests.system.cloud_system import CloudSystem


def _step(callback: HoldCloudSize, system: CloudSystem) -> None:
    callback.on_train_batch_end(None, system, None, None, 0)


def test_the_centres_keep_the_first_held_radius_and_only_their_size_is_undone():
    cloud = GaussianModel(n_init=50, seed=0)
    system = CloudSystem(cloud, "geometry")
    callback = HoldCloudSize(["geometry"])
    _step(callback, system)
    radius = float(rms_radius(cloud.means.detach()))
    assert callback.radius == pytest.approx(radius)
    with torch.no_grad():
        cloud.params["means"].mul_(1.2).add_(torch.tensor([0.1, 0.0, 0.0]))  # a step grows and moves it
    moved = cloud.means.detach().clone()
    _step(callback, system)
    assert float(rms_radius(cloud.means.detach())) == pytest.approx(radius, rel=1e-6)
    torch.testing.assert_close(cloud.means.mean(dim=0), moved.mean(dim=0))  # the move stays
    system.stage_name = "appearance"  # not held
    with torch.no_grad():
        cloud.params["means"].mul_(1.2)
    _step(callback, system)
    assert float(rms_radius(cloud.means.detach())) == pytest.approx(1.2 * radius, rel=1e-6)


def test_the_radius_is_checkpointed_and_no_stages_hold_nothing():
    callback = HoldCloudSize(["geometry"])
    callback.radius = 0.5
    restored = HoldCloudSize(["geometry"])
    restored.load_state_dict(callback.state_dict())
    assert restored.radius == 0.5
    cloud = GaussianModel(n_init=50, seed=0)
    before = cloud.means.detach().clone()
    with torch.no_grad():
        cloud.params["means"].mul_(2.0)
    _step(HoldCloudSize(), CloudSystem(cloud, "geometry"))
    torch.testing.assert_close(cloud.means.detach(), 2.0 * before)
