"""framework.conversions.nerf_to_dmtet: Magic3D's stage boundary. A NeRF whose density is a ball
becomes a DMTet of the ball's radius, coloured by a copy of the NeRF's albedo; with the threshold
"shape", of the radius of the solid the NeRF started from; a threshold above every density is
named in one line; the placeholder takes the converted DMTet's weights."""

from __future__ import annotations

import copy
import math
from functools import partial

import pytest
import torch

from framework.conversions.nerf_to_dmtet import NeRFToDMTet
from framework.representations.dmtet import DMTet
from framework.representations.encodings import TriplaneEncoding
from framework.representations.nerf import NeRFField

THRESHOLD, BLOB_DENSITY, BLOB_RADIUS = 5.0, 10.0, 1.0
# softplus(blob_density * (1 - r / blob_radius)) = threshold on the ball's surface.
RADIUS = BLOB_RADIUS * (1 - math.log(math.expm1(THRESHOLD)) / BLOB_DENSITY)


def _ball_nerf() -> NeRFField:
    """A NeRF whose density is the blob alone (the density head outputs 0): a ball of `RADIUS`
    above `THRESHOLD`; its albedo varies in space."""
    torch.manual_seed(0)
    nerf = NeRFField(TriplaneEncoding(resolution=8, channels=4, init_std=1.0), hidden=16, blob_density=BLOB_DENSITY, blob_radius=BLOB_RADIUS)
    with torch.no_grad():
        nerf.density_head[-1].weight.zero_()
        nerf.density_head[-1].bias.zero_()
    return nerf


def _no_render(cameras):
    raise AssertionError("the conversion needs no render")


def _field_dmtet(**kwargs) -> DMTet:
    """A fresh field DMTet per call (Hydra's partial would share one encoding between calls)."""
    return DMTet(resolution=16, encoding=TriplaneEncoding(resolution=16, channels=4), hidden=32, **kwargs)


@pytest.mark.parametrize("mode", ["per-vertex", "field"])
def test_a_density_ball_becomes_a_dmtet_of_its_radius(mode: str) -> None:
    dmtet_factory = partial(DMTet, resolution=16, encoding=None) if mode == "per-vertex" else _field_dmtet
    convert = NeRFToDMTet(dmtet_factory, density_threshold=THRESHOLD, grid_resolution=48, fit_steps=150)
    dmtet = convert(_ball_nerf(), _no_render)
    assert isinstance(dmtet, DMTet)
    radii = dmtet.surface()[0].detach().norm(dim=-1)
    cell = 2.0 / 16
    assert abs(radii.mean().item() - RADIUS) < cell / 4
    assert (radii - RADIUS).abs().max() < cell / 2
    assert dmtet.shape_state() == {"resolution": 16, "scale": 1.0}



class _Sphere(torch.nn.Module):
    """The signed distance of a sphere about the origin: a NeRF's start shape."""

    def __init__(self, radius: float) -> None:
        super().__init__()
        self.radius = radius

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return points.norm(dim=-1) - self.radius


@pytest.mark.parametrize("offset", [-2.0, 3.0])
def test_shape_cuts_the_nerf_at_its_start_shapes_volume(offset: float) -> None:
    """A NeRF started from a sphere of radius 0.6 whose density head adds `offset` everywhere (SDS
    thinned or thickened it): its level sets are still spheres, and "shape" takes the one of radius
    0.6, where a fixed level moves with the offset."""
    torch.manual_seed(0)
    nerf = NeRFField(TriplaneEncoding(resolution=8, channels=4), hidden=16, blob_density=BLOB_DENSITY, shape=_Sphere(0.6))
    with torch.no_grad():
        nerf.density_head[-1].weight.zero_()
        nerf.density_head[-1].bias.fill_(offset)
    cell = 2.0 / 16
    for threshold, radius in (("shape", 0.6), (math.log(2.0), 0.6 + offset * nerf.shape_depth / BLOB_DENSITY)):
        dmtet = NeRFToDMTet(partial(DMTet, resolution=16, encoding=None), density_threshold=threshold, grid_resolution=48)(nerf, _no_render)
        radii = dmtet.surface()[0].detach().norm(dim=-1)
        assert abs(radii.mean().item() - radius) < cell / 4, threshold


def test_shape_without_a_start_shape_is_named() -> None:
    convert = NeRFToDMTet(partial(DMTet, resolution=8, encoding=None), density_threshold="shape", grid_resolution=16)
    with pytest.raises(ValueError, match=r"density threshold 'shape'.*\(representation.shape=null\).*\(the density spans") as refused:
        convert(_ball_nerf(), _no_render)
    assert "\n" not in str(refused.value)


def test_the_conversion_does_not_depend_on_the_global_rng() -> None:
    """A run resumed before the switch converts with another global RNG state than an
    uninterrupted one: the DMTet must come out the same, bit for bit."""
    nerf = _ball_nerf()
    encoding = TriplaneEncoding(resolution=16, channels=4)
    convert = NeRFToDMTet(lambda **kwargs: DMTet(resolution=8, encoding=copy.deepcopy(encoding), hidden=16, **kwargs), grid_resolution=32, fit_steps=20)
    states = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        states.append(convert(nerf, _no_render).state_dict())
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key

def test_the_dmtet_is_coloured_by_a_copy_of_the_nerfs_albedo() -> None:
    nerf = _ball_nerf()
    dmtet = NeRFToDMTet(partial(DMTet, resolution=8, encoding=None), grid_resolution=32)(nerf, _no_render)
    points = dmtet.surface()[0].detach()
    albedo = nerf.albedo(points)
    assert albedo.std(dim=0).min() > 0.01  # a colour that varies, so a wrong lookup would show
    torch.testing.assert_close(dmtet.albedo(points), albedo, rtol=0, atol=0)
    assert dmtet.colour is not nerf
    with torch.no_grad():
        dmtet.colour.albedo_head[-1].bias.add_(1.0)  # training the fine stage's colour ...
    torch.testing.assert_close(nerf.albedo(points), albedo, rtol=0, atol=0)  # ... leaves the NeRF as it was


def test_a_threshold_above_every_density_is_named() -> None:
    convert = NeRFToDMTet(partial(DMTet, resolution=8, encoding=None), density_threshold=1000.0, grid_resolution=16)
    with pytest.raises(ValueError, match=r"the shape is empty on the 16\^3 grid.*density_threshold=1000.0 \(the density spans") as refused:
        convert(_ball_nerf(), _no_render)
    assert "\n" not in str(refused.value) and "system.stages.<fine stage>.convert.density_threshold" in str(refused.value)


def test_the_placeholder_loads_the_converted_dmtets_state_dict() -> None:
    """What a resumed run does: an empty DMTet of the checkpoint's shape, its colour field built
    from the previous stage's NeRF, takes the converted DMTet's weights and makes its surface."""
    nerf = _ball_nerf()
    convert = NeRFToDMTet(_field_dmtet, density_threshold=THRESHOLD, grid_resolution=32, fit_steps=60)
    dmtet = convert(nerf, _no_render)
    with torch.no_grad():
        dmtet.colour.albedo_head[-1].bias.add_(0.5)  # the fine stage trained the colour
    placeholder = convert.placeholder(dmtet.shape_state(), nerf)
    assert isinstance(placeholder, DMTet) and placeholder.colour is not nerf
    placeholder.load_state_dict(dmtet.state_dict())
    (vertices, faces), (expected_vertices, expected_faces) = placeholder.surface(), dmtet.surface()
    assert torch.equal(faces, expected_faces)
    torch.testing.assert_close(vertices, expected_vertices, rtol=0, atol=0)
    points = expected_vertices.detach()
    torch.testing.assert_close(placeholder.albedo(points), dmtet.albedo(points), rtol=0, atol=0)
