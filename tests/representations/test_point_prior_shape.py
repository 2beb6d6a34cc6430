"""framework.representations.point_prior_shape: the solid of a point prior's sample of the prompt.
Points on a sphere give the sphere's signed distance; the prior is sampled once, from the shape's
own seed; the grid is a buffer a checkpoint holds; bad input is named in one line."""

from __future__ import annotations

import pytest
import torch

import framework.representations.point_prior_shape as shapes
from framework.representations.point_prior_shape import PointPriorShape

RADIUS = 0.5  # conftest's sphere_point_prior


def test_points_on_a_sphere_give_its_signed_distance(sphere_point_prior) -> None:
    shape = PointPriorShape("prior", "a blue sphere", steps=12, guidance_scale=1.5, seed=4)
    assert sphere_point_prior == [(["a blue sphere"], 4, 12, 1.5)]
    directions = torch.nn.functional.normalize(torch.randn(64, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    assert shape(directions * RADIUS).abs().max() < 0.05  # the surface sits at the points
    torch.testing.assert_close(shape(directions * 0.8), torch.full((64,), 0.8 - RADIUS), atol=0.05, rtol=0)  # within a voxel (0.043)
    assert (shape(directions * 0.3) < -0.1).all() and shape(torch.zeros(1, 3)) < -0.35
    assert shape(directions.view(8, 8, 3)).shape == (8, 8)


def test_the_grid_is_a_buffer_a_checkpoint_restores(sphere_point_prior) -> None:
    shape = PointPriorShape("prior", "a blue sphere", grid_resolution=24)
    state = shape.state_dict()
    assert list(state) == ["values"] and state["values"].shape == (24, 24, 24)
    other = PointPriorShape("prior", "a red cube", grid_resolution=24, seed=1)
    other.load_state_dict(state)
    points = torch.rand(50, 3) * 2 - 1
    torch.testing.assert_close(other(points), shape(points), rtol=0, atol=0)


def test_an_empty_prompt_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match=r"got None \(without a prompt, set representation.shape=null\)"):
        PointPriorShape("prior", None)


def test_points_that_enclose_nothing_are_named(monkeypatch) -> None:
    monkeypatch.setattr(shapes, "load_point_cloud_model", lambda pretrained, clip_model: object())
    monkeypatch.setattr(shapes, "sample_point_clouds", lambda *args: (torch.zeros(1, 64, 3), torch.zeros(1, 64, 3)))
    with pytest.raises(ValueError, match=r"point-prior shape \('a red cube'\): the 64 points enclose no volume") as refused:
        PointPriorShape("prior", "a red cube")
    assert "\n" not in str(refused.value) and "representation.shape.max_shell_voxels" in str(refused.value)
