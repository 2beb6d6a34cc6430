"""HoldCloudTurn: a turned 4-fold cloud is turned back about its vertical axis (centres and
orientations alike), only in the named stages and only when clearly 4-fold, and the held turn is
checkpointed."""

from __future__ import annotations

import math

import pytest
import torch

from framework.callbacks.hold_cloud_turn import HoldCloudTurn, angular_moment, turn_about_z, wrap_turn
from framework.representations.gaussians import GaussianModel, quat_to_rotmat
from tests.system.cloud_system import CloudSystem


def _box_cloud(seed: int = 0) -> GaussianModel:
    """Gaussians on the side faces and vertical edges of an upright square box, off the origin, with
    random orientations: clearly 4-fold (moment 0.7), as GSGEN's cube clouds are."""
    generator = torch.Generator().manual_seed(seed)
    n = 400
    across = torch.rand(n, generator=generator) * 2 - 1
    across[: n // 2] = torch.sign(across[: n // 2])  # half of them on the edges
    side = torch.randint(0, 4, (n,), generator=generator)
    planar = torch.stack([torch.ones(n), across], dim=-1)
    for _ in range(3):  # each side is the first turned by a quarter circle
        turned = side > 0
        planar[turned] = torch.stack([-planar[turned, 1], planar[turned, 0]], dim=-1)
        side = side - 1
    points = torch.cat([planar, torch.rand(n, 1, generator=generator) * 2 - 1], dim=-1)
    return GaussianModel.from_tensors(
        {
            "means": points * 0.4 + torch.tensor([0.2, -0.1, 0.05]),
            "scales": torch.full((n, 3), -3.0),
            "quats": torch.randn(n, 4, generator=generator),
            "opacities": torch.zeros(n),
            "sh0": torch.rand(n, 1, 3, generator=generator),
        }
    )


def _rotations(cloud: GaussianModel) -> torch.Tensor:
    return quat_to_rotmat(torch.nn.functional.normalize(cloud.params["quats"].detach(), dim=-1))


def _turn(cloud: GaussianModel, angle: float) -> None:
    """Turn the whole cloud by `angle` about the vertical line through its centroid (what a step might do)."""
    with torch.no_grad():
        means = cloud.params["means"]
        centre = means[:, :2].mean(dim=0)
        x, y = (means[:, :2] - centre).unbind(dim=-1)
        means[:, :2] = centre + torch.stack([math.cos(angle) * x - math.sin(angle) * y, math.sin(angle) * x + math.cos(angle) * y], dim=-1)
        half = angle / 2  # the turn's quaternion (cos, 0, 0, sin) as a left-multiplication matrix
        c, s = math.cos(half), math.sin(half)
        left = torch.tensor([[c, 0.0, 0.0, -s], [0.0, c, -s, 0.0], [0.0, s, c, 0.0], [s, 0.0, 0.0, c]])
        before = _rotations(cloud)
        cloud.params["quats"].copy_(cloud.params["quats"] @ left.T)
        rotation = torch.tensor([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0], [0.0, 0.0, 1.0]])
        torch.testing.assert_close(_rotations(cloud), rotation @ before, atol=1e-5, rtol=0)


def _step(callback: HoldCloudTurn, system: CloudSystem) -> None:
    callback.on_train_batch_end(None, system, None, None, 0)


def test_the_turn_reads_a_boxs_faces_and_wraps_by_a_quarter_circle():
    cloud = _box_cloud()
    base = float(turn_about_z(cloud.means.detach(), 4))
    for degrees in (10.0, -30.0, 40.0):
        _turn(cloud, math.radians(degrees))
        turned = float(turn_about_z(cloud.means.detach(), 4))
        assert math.degrees(wrap_turn(turned - base, 4)) == pytest.approx(degrees, abs=1e-3)
        _turn(cloud, -math.radians(degrees))
    assert math.degrees(wrap_turn(math.radians(100.0), 4)) == pytest.approx(10.0)
    assert math.degrees(wrap_turn(math.radians(-50.0), 4)) == pytest.approx(40.0)


@pytest.mark.parametrize("degrees", [25.0, -15.0])
def test_a_turned_cloud_is_turned_back_centres_and_orientations_alike(degrees: float):
    cloud = _box_cloud()
    system = CloudSystem(cloud, "geometry")
    callback = HoldCloudTurn(["geometry"])
    _step(callback, system)  # the first held step sets the turn
    means, rotations = cloud.means.detach().clone(), _rotations(cloud)
    _turn(cloud, math.radians(degrees))
    with torch.no_grad():
        cloud.params["means"].add_(torch.tensor([0.1, 0.2, 0.3]))  # a step also moves it: that stays
    _step(callback, system)
    torch.testing.assert_close(cloud.means.detach(), means + torch.tensor([0.1, 0.2, 0.3]), atol=1e-5, rtol=0)
    torch.testing.assert_close(_rotations(cloud), rotations, atol=1e-5, rtol=0)


def test_only_the_named_stages_are_held_and_the_turn_is_checkpointed():
    cloud = _box_cloud()
    system = CloudSystem(cloud, "appearance")
    callback = HoldCloudTurn(["geometry"])
    _step(callback, system)
    assert callback.turn is None
    _turn(cloud, math.radians(20.0))
    turned = cloud.means.detach().clone()
    _step(callback, system)
    torch.testing.assert_close(cloud.means.detach(), turned)
    callback.turn = 0.25
    restored = HoldCloudTurn(["geometry"])
    restored.load_state_dict(callback.state_dict())
    assert restored.turn == 0.25
    with pytest.raises(ValueError, match="symmetry=0"):
        HoldCloudTurn(["geometry"], symmetry=0)
    with pytest.raises(ValueError, match="min_strength=1.5"):
        HoldCloudTurn(["geometry"], min_strength=1.5)


def test_a_cloud_that_is_not_clearly_four_fold_keeps_its_turn():
    cloud = _box_cloud()
    assert float(angular_moment(cloud.means.detach(), 4).abs()) == pytest.approx(0.7, abs=0.05)
    system = CloudSystem(cloud, "geometry")
    callback = HoldCloudTurn(["geometry"], min_strength=0.8)
    _step(callback, system)
    _turn(cloud, math.radians(20.0))
    turned = cloud.means.detach().clone()
    _step(callback, system)
    torch.testing.assert_close(cloud.means.detach(), turned)
