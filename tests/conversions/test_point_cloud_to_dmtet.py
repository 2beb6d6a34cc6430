"""framework.conversions.point_cloud_to_dmtet: a point-cloud prior's sample as a DMTet's start.
Points on a sphere become a DMTet of the sphere's radius; the prior is sampled once, from the
conversion's own seed, and the DMTet does not depend on the global RNG; points that enclose nothing are named in one line; the placeholder takes the
converted DMTet's weights."""

from __future__ import annotations

import copy

import pytest
import torch

import framework.representations.point_prior_shape as shapes
from framework.conversions.point_cloud_to_dmtet import PointCloudToDMTet
from framework.representations.dmtet import DMTet
from framework.representations.encodings import TriplaneEncoding

RADIUS = 0.5  # conftest's sphere_point_prior


def _field_dmtet(**kwargs) -> DMTet:
    return DMTet(resolution=16, encoding=TriplaneEncoding(resolution=16, channels=4), hidden=32, **kwargs)


def _no_render(cameras):
    raise AssertionError("the conversion needs no render")


@pytest.mark.parametrize("field", [False, True])
def test_points_on_a_sphere_become_a_dmtet_of_its_radius(sphere_point_prior, field: bool) -> None:
    make = _field_dmtet if field else (lambda **kwargs: DMTet(resolution=16, encoding=None, **kwargs))
    convert = PointCloudToDMTet(make, pretrained="prior", prompt="a blue sphere", seed=3, fit_steps=150)
    dmtet = convert(torch.nn.Linear(1, 1), _no_render)
    assert sphere_point_prior == [(["a blue sphere"], 3, 64, 1.0)]
    vertices, faces = dmtet.surface()
    assert len(faces) > 100
    radii = vertices.detach().norm(dim=-1)
    assert abs(radii.mean().item() - RADIUS) < 0.06 and radii.std().item() < 0.05


def test_the_conversion_does_not_depend_on_the_global_rng(sphere_point_prior) -> None:
    """A run resumed before the switch converts with another global RNG state than an
    uninterrupted one: the DMTet must come out the same, bit for bit."""
    encoding = TriplaneEncoding(resolution=16, channels=4)
    convert = PointCloudToDMTet(lambda **kwargs: DMTet(resolution=8, encoding=copy.deepcopy(encoding), hidden=16, **kwargs), pretrained="prior", prompt="a blue sphere", fit_steps=20)
    states = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        states.append(convert(torch.nn.Linear(1, 1), _no_render).state_dict())
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key


def test_points_that_enclose_nothing_are_named(monkeypatch) -> None:
    monkeypatch.setattr(shapes, "load_point_cloud_model", lambda pretrained, clip_model: object())
    monkeypatch.setattr(shapes, "sample_point_clouds", lambda *args: (torch.zeros(1, 64, 3), torch.zeros(1, 64, 3)))
    convert = PointCloudToDMTet(_field_dmtet, pretrained="prior", prompt="a red cube")
    with pytest.raises(ValueError, match=r"point cloud -> DMTet \('a red cube'\): the 64 points enclose no volume") as refused:
        convert(torch.nn.Linear(1, 1), _no_render)
    assert "\n" not in str(refused.value) and "convert.max_shell_voxels" in str(refused.value)


def test_an_empty_prompt_is_refused() -> None:
    with pytest.raises(ValueError, match="samples a point-cloud prior for a prompt"):
        PointCloudToDMTet(_field_dmtet, pretrained="prior", prompt=" ")


def test_the_placeholder_loads_the_converted_dmtets_state_dict(sphere_point_prior) -> None:
    convert = PointCloudToDMTet(_field_dmtet, pretrained="prior", prompt="a blue sphere", fit_steps=60)
    dmtet = convert(torch.nn.Linear(1, 1), _no_render)
    placeholder = convert.placeholder(dmtet.shape_state())
    placeholder.load_state_dict(dmtet.state_dict())
    (vertices, faces), (expected_vertices, expected_faces) = placeholder.surface(), dmtet.surface()
    assert torch.equal(faces, expected_faces)
    torch.testing.assert_close(vertices, expected_vertices, rtol=0, atol=0)
