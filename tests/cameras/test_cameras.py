import math

import numpy as np
import pytest
import torch
from PIL import Image

from framework.cameras.batch import Batch
from framework.cameras.camera import CameraBatch, look_at, orbit_position
from framework.cameras.datamodule import OrbitCameraDataModule
from framework.cameras.distribution import OrbitDistribution, orbit_ring
from framework.schedules import Schedule


def _camera(elevation: float, azimuth: float, distance: float = 3.0, fovy: float = 40.0, size: int = 8) -> CameraBatch:
    return CameraBatch.from_orbit(torch.tensor([elevation]), torch.tensor([azimuth]), torch.tensor([distance]), torch.tensor([fovy]), size)


def test_azimuth_zero_is_the_front_on_plus_x_and_z_is_up():
    position = orbit_position(torch.tensor([0.0, 90.0]), torch.tensor([0.0, 0.0]), torch.tensor([2.0, 2.0]))
    torch.testing.assert_close(position[0], torch.tensor([2.0, 0.0, 0.0]))
    torch.testing.assert_close(position[1], torch.tensor([0.0, 0.0, 2.0]), atol=1e-6, rtol=0)
    side = orbit_position(torch.tensor([0.0]), torch.tensor([90.0]), torch.tensor([1.0]))
    torch.testing.assert_close(side[0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0)


def test_look_at_is_a_rotation_looking_at_the_origin_with_up_up():
    c2w = look_at(orbit_position(torch.tensor([30.0, 89.9999, -90.0]), torch.tensor([45.0, 0.0, 10.0]), torch.tensor([3.0, 3.0, 3.0])))
    rotation = c2w[:, :3, :3]
    torch.testing.assert_close(rotation @ rotation.transpose(1, 2), torch.eye(3).expand(3, 3, 3), atol=1e-5, rtol=0)
    assert torch.allclose(torch.linalg.det(rotation), torch.ones(3), atol=1e-5)
    forward = -c2w[:, :3, 2]
    to_origin = torch.nn.functional.normalize(-c2w[:, :3, 3], dim=-1)
    torch.testing.assert_close(forward, to_origin, atol=1e-5, rtol=0)
    assert c2w[0, 2, 1] > 0  # the camera's up has a positive world-z component


def test_centre_ray_hits_the_origin_and_image_top_is_world_up():
    camera = _camera(0.0, 0.0, size=8)
    origins, directions = camera.rays()
    centre = directions[0, 3:5, 3:5].mean(dim=(0, 1))
    torch.testing.assert_close(torch.nn.functional.normalize(centre, dim=0), torch.tensor([-1.0, 0.0, 0.0]), atol=1e-6, rtol=0)
    assert directions[0, 0, 4, 2] > 0 > directions[0, -1, 4, 2]  # row 0 looks up
    assert directions[0, 4, -1, 1] > 0 > directions[0, 4, 0, 1]  # right of the front view is +y


def test_opencv_projection_matches_the_rays():
    camera = _camera(25.0, 70.0, size=16)
    origins, directions = camera.rays()
    points = origins + 2.5 * directions
    w2c = camera.world_to_camera_opencv()[0]
    camera_points = points[0].reshape(-1, 3) @ w2c[:3, :3].T + w2c[:3, 3]
    pixels = camera_points @ camera.intrinsics()[0].T
    pixels = pixels[:, :2] / pixels[:, 2:]
    v, u = torch.meshgrid(torch.arange(16) + 0.5, torch.arange(16) + 0.5, indexing="ij")
    torch.testing.assert_close(pixels, torch.stack([u, v], dim=-1).reshape(-1, 2).float(), atol=1e-3, rtol=0)


def test_opengl_projection_matches_the_rays():
    camera = _camera(-5.0, 200.0, size=8)
    origins, directions = camera.rays()
    points = torch.cat([origins[0] + 2.0 * directions[0], torch.ones(8, 8, 1)], dim=-1).reshape(-1, 4)
    clip = points @ (camera.projection_opengl() @ torch.linalg.inv(camera.c2w))[0].T
    ndc = clip[:, :2] / clip[:, 3:]
    v, u = torch.meshgrid(torch.arange(8) + 0.5, torch.arange(8) + 0.5, indexing="ij")
    expected = torch.stack([u / 8 * 2 - 1, 1 - v / 8 * 2], dim=-1).reshape(-1, 2)
    torch.testing.assert_close(ndc, expected, atol=1e-4, rtol=0)


def test_distribution_is_seeded_and_within_ranges():
    distribution = OrbitDistribution(elevation_range=(0.0, 30.0), distance_range=(2.0, 2.5))
    a = distribution.sample(64, 16, torch.Generator().manual_seed(3))
    b = distribution.sample(64, 16, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.c2w, b.c2w)
    assert a.elevation_deg.min() >= 0 and a.elevation_deg.max() <= 30
    assert a.distance.min() >= 2.0 and a.distance.max() <= 2.5
    assert (a.position.norm(dim=-1) - a.distance).abs().max() < 1e-5


@pytest.mark.parametrize(
    "kwargs, name",
    [({"elevation_range": (10.0, 0.0)}, "elevation_range"), ({"distance_range": (0.5, 2.0)}, "distance_range"), ({"fovy_range": (0.0, 200.0)}, "fovy_range")],
)
def test_distribution_rejects_bad_ranges_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        OrbitDistribution(**kwargs)


def test_orbit_ring_spreads_azimuths():
    ring = orbit_ring(4, 20.0, 2.8, 42.0, 32)
    assert ring.azimuth_deg.tolist() == [0.0, 90.0, -180.0, -90.0]
    assert ring.height == 32 and ring.batch_size == 4


def test_datamodule_batches_depend_only_on_index_and_follow_schedules():
    module = OrbitCameraDataModule(OrbitDistribution(), batch_size=Schedule([[0, 1], [10, 2]], "step"), resolution=Schedule([[0, 32], [5, 64]], "step"), seed=7)
    first, again = module.training_batch(3), module.training_batch(3)
    torch.testing.assert_close(first.c2w, again.c2w)
    assert not torch.allclose(module.training_batch(4).c2w, first.c2w)
    assert (first.batch_size, first.height) == (1, 32)
    late = module.training_batch(12)
    assert (late.batch_size, late.height) == (2, 64)
    # Every loader yields `Batch`es: the cameras, and no reference view without `image=`.
    validation = module.val_dataloader().dataset[0]
    assert isinstance(validation, Batch) and validation.reference is None
    assert math.isclose(validation.cameras.batch_size, 4)
    training = next(iter(module.train_dataloader()))
    assert isinstance(training, Batch) and training.reference is None
    torch.testing.assert_close(training.cameras.c2w, module.training_batch(0).c2w)
    turntable = list(module.test_dataloader())
    assert all(isinstance(chunk, Batch) and chunk.reference is None for chunk in turntable)
    assert sum(chunk.cameras.batch_size for chunk in turntable) == module.n_turntable_frames


def test_cat_joins_batches_and_refuses_mixed_resolutions():
    a = orbit_ring(3, 10.0, 2.8, 42.0, 16)
    b = orbit_ring(2, 60.0, 2.5, 40.0, 16)
    both = CameraBatch.cat([a, b])
    assert both.batch_size == 5 and both.height == 16
    assert torch.equal(both.subset(slice(3, 5)).c2w, b.c2w) and torch.equal(both.elevation_deg[:3], a.elevation_deg)
    with pytest.raises(ValueError, match="different resolutions"):
        CameraBatch.cat([a, b.with_resolution(32)])


def test_the_reference_view_follows_its_resolution_schedule(tmp_path):
    image = np.full((96, 96, 3), 255, dtype=np.uint8)
    image[30:66, 36:60] = (200, 30, 30)
    Image.fromarray(image).save(tmp_path / "object.png")
    module = OrbitCameraDataModule(OrbitDistribution(), image=str(tmp_path / "object.png"), reference_resolution=[[0, 16], [10, 32]])
    early, late = module.reference_at(9), module.reference_at(10)
    assert early.image.shape == (1, 16, 16, 3) and early.cameras.height == 16
    assert late.image.shape == (1, 32, 32, 3) and late.cameras.height == 32
    # The same object at both resolutions, from the same camera.
    assert abs(float(early.mask.mean()) - float(late.mask.mean())) < 0.02
    torch.testing.assert_close(early.cameras.c2w, late.cameras.c2w)
    assert module.reference is late  # validation and the turntable use the largest
    training = iter(module.train_dataloader())
    assert next(training).reference is early
    with pytest.raises(ValueError, match="reference_resolution=4"):
        OrbitCameraDataModule(OrbitDistribution(), image=str(tmp_path / "object.png"), reference_resolution=[[0, 4], [10, 32]])
