"""VSD's particles: independent initialisations, a draw per step that resume repeats, the camera
batch shared among the drawn particles, and the set standing for its first particle elsewhere."""

from __future__ import annotations

import pytest
import torch

from framework.cameras.camera import CameraBatch
from framework.renderers.occupancy import OccupancyGrid
from framework.renderers.volume import VolumeRenderer
from framework.representations.background import SolidBackground
from framework.representations.encodings import TriplaneEncoding
from framework.representations.gaussians import GaussianModel
from framework.representations.materials import DiffuseMaterial
from framework.representations.nerf import NeRFField
from framework.representations.particles import Particles, concatenate_renders


def _nerf() -> NeRFField:
    return NeRFField(encoding=TriplaneEncoding(resolution=8, channels=4), hidden=8, n_hidden_layers=1)


def _cameras(batch: int) -> CameraBatch:
    azimuths = torch.linspace(0.0, 270.0, batch)
    ones = torch.ones(batch)
    return CameraBatch.from_orbit(10.0 * ones, azimuths, 3.0 * ones, 40.0 * ones, height=8)


def test_each_particle_starts_from_its_own_draw():
    torch.manual_seed(0)
    particles = Particles(_nerf(), count=3)
    first, second, third = (torch.cat([p.flatten() for p in member.parameters()]) for member in particles.members)
    assert not torch.equal(first, second) and not torch.equal(second, third)


def test_a_step_draws_distinct_particles_and_the_same_ones_again():
    particles = Particles(_nerf(), count=4, per_step=2, seed=3)
    draws = [particles.drawn(step) for step in range(40)]
    assert all(len(set(draw)) == 2 for draw in draws)
    assert draws == [particles.drawn(step) for step in range(40)]
    assert {index for draw in draws for index in draw} == {0, 1, 2, 3}
    assert draws != [Particles(_nerf(), count=4, per_step=2, seed=4).drawn(step) for step in range(40)]


def test_the_camera_batch_is_shared_among_the_drawn_particles():
    particles = Particles(_nerf(), count=3, per_step=2)
    cameras = _cameras(4)
    pairs = particles.assign(cameras, step=5)
    drawn = particles.drawn(5)
    assert [member for member, _ in pairs] == [particles.members[i] for i in drawn]
    torch.testing.assert_close(torch.cat([share.c2w for _, share in pairs]), cameras.c2w)
    with pytest.raises(ValueError, match="camera.batch_size=3 must be a multiple of per_step=2"):
        particles.assign(_cameras(3), step=0)


def test_the_set_acts_as_its_first_particle_and_its_union_covers_all():
    torch.manual_seed(0)
    particles = Particles(_nerf(), count=2)
    points = torch.rand(64, 3) * 2 - 1
    density, albedo = particles(points)
    expected_density, expected_albedo = particles.members[0](points)
    torch.testing.assert_close(density, expected_density)
    torch.testing.assert_close(albedo, expected_albedo)
    torch.testing.assert_close(particles.density(points), particles.members[0].density(points))
    union = particles.union_density(points)
    torch.testing.assert_close(union, torch.maximum(particles.members[0].density(points), particles.members[1].density(points)))


def test_the_learning_rate_names_are_one_particles_for_every_particle():
    particles = Particles(_nerf(), count=2)
    names = [name for name, _ in particles.rate_named_parameters()]
    one = [name for name, _ in particles.members[0].named_parameters()]
    assert names == one + one
    assert len(list(particles.rate_named_parameters())) == len(list(particles.parameters()))


def test_renders_of_the_shares_join_into_the_batch_render():
    torch.manual_seed(0)
    particles = Particles(_nerf(), count=2, per_step=2)
    renderer = VolumeRenderer(n_samples=8, occupancy=OccupancyGrid(resolution=8, update_every=1))
    renderer.update(particles, step=0)
    material, background = DiffuseMaterial(), SolidBackground((1.0, 1.0, 1.0))
    cameras = _cameras(2)
    pairs = particles.assign(cameras, step=0)
    parts = [renderer(member, material, background, share, material.sample_shading(share, False), False) for member, share in pairs]
    joined = concatenate_renders(parts)
    assert joined["rgb"].shape[0] == 2
    torch.testing.assert_close(joined["rgb"][1:], parts[1]["rgb"])


@pytest.mark.parametrize("count, per_step", [(0, 1), (2, 3), (2, 0)])
def test_bad_counts_are_refused_naming_them(count, per_step):
    with pytest.raises(ValueError, match=f"count={count} must be at least 1 and per_step={per_step}"):
        Particles(_nerf(), count=count, per_step=per_step)


def test_representations_whose_shape_changes_cannot_be_particles():
    with pytest.raises(ValueError, match="particles of GaussianModel are not supported"):
        Particles(GaussianModel(n_init=8), count=2)


def test_a_part_that_cannot_redraw_its_weights_is_named():
    class Fixed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = torch.nn.Parameter(torch.zeros(4))

    field = _nerf()
    field.extra = Fixed()
    with pytest.raises(ValueError, match="NeRFField's extra.table would start alike in every particle"):
        Particles(field, count=2)
