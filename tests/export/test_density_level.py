"""framework.export.density_level: the surface level of a density grid whose level set casts the
field's rendered silhouettes, or holds the volume of the solid the field started from, and the
checks of a threshold setting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from framework.export.density_level import check_threshold, silhouette_matched_level, surface_level, volume_matched_level
from framework.export.marching_cubes import sample_grid

RESOLUTION = 96
RADIUS = 0.8


def _soft_ball(peak: float):
    """A density `peak` at the centre, falling linearly to 0 at RADIUS."""
    return lambda points: peak * (1.0 - points.norm(dim=-1) / RADIUS).clamp_min(0.0)


def _rendered_silhouette_radius(peak: float, opacity: float = 0.5) -> float:
    """The impact parameter b where the opacity of a ray through the soft ball is `opacity`:
    the integral of the density along the chord equals -ln(1 - opacity) (bisection on a fine
    quadrature)."""
    t = torch.linspace(-RADIUS, RADIUS, 20001, dtype=torch.float64)

    def optical_depth(b: float) -> float:
        r = torch.sqrt(b * b + t * t)
        return float(torch.trapezoid(peak * (1.0 - r / RADIUS).clamp_min(0.0), t))

    low, high = 0.0, RADIUS
    for _ in range(60):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if optical_depth(middle) > -math.log(1.0 - opacity) else (low, middle)
    return 0.5 * (low + high)


@pytest.mark.parametrize("peak, opacity", [(14.0, 0.5), (140.0, 0.5), (14.0, 0.2)])
def test_the_level_set_casts_the_rendered_silhouette(peak: float, opacity: float) -> None:
    """The chosen level's ball, radius RADIUS * (1 - level / peak), has the radius of the rendered
    silhouette at `opacity` within a grid cell, for a faint and a dense field (a fixed level 5 would
    cut the faint one 28 % inside its silhouette)."""
    grid = sample_grid(_soft_ball(peak), RESOLUTION)
    level = silhouette_matched_level(grid, covered_opacity=opacity)
    cell = 2.0 / (RESOLUTION - 1)
    assert abs(RADIUS * (1.0 - level / peak) - _rendered_silhouette_radius(peak, opacity)) < 1.5 * cell
    assert 0.0 < level < peak


@pytest.mark.parametrize("opacity", [0.0, 1.0, -0.5])
def test_a_covered_opacity_outside_0_1_is_named(opacity: float) -> None:
    with pytest.raises(ValueError, match=rf"covered opacity {opacity!r}: give a number between 0 and 1"):
        silhouette_matched_level(sample_grid(_soft_ball(14.0), 16), covered_opacity=opacity)


def test_an_empty_field_is_refused_with_its_range() -> None:
    with pytest.raises(ValueError, match=r"densities 0 to 0.01\): the field is empty") as refused:
        silhouette_matched_level(np.full((8, 8, 8), 0.01, dtype=np.float32) * (np.arange(8) == 7)[:, None, None])
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("solid_radius", [0.3, 0.55])
def test_the_volume_matched_level_holds_the_solids_volume(solid_radius: float) -> None:
    """Whatever the field's peak, the level set is the solid's ball: as many samples inside, and the
    radius RADIUS * (1 - level / peak) within a grid cell of the solid's."""
    for peak in (14.0, 140.0):
        grid = sample_grid(_soft_ball(peak), 48)
        solid = sample_grid(lambda points: points.norm(dim=-1), 48) < solid_radius
        level = volume_matched_level(grid, solid)
        assert (grid > level).sum() == solid.sum()
        assert abs(RADIUS * (1.0 - level / peak) - solid_radius) < 2.0 / 47


@pytest.mark.parametrize("solid, message", [(np.zeros((8, 8, 8), bool), "holds 0 of 512"), (np.ones((8, 8, 8), bool), "holds 512 of 512"), (np.ones((4, 4, 4), bool), r"grid \(4, 4, 4\) is not")])
def test_a_solid_no_level_can_match_is_named(solid: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        volume_matched_level(sample_grid(_soft_ball(14.0), 8), solid)


def test_shape_without_a_start_solid_is_named() -> None:
    with pytest.raises(ValueError, match=r"density threshold 'shape'.*has none \(representation.shape=null\)") as refused:
        surface_level(sample_grid(_soft_ball(14.0), 8), "shape")
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("setting", ["automatic", -1.0, 0, True, None])
def test_a_bad_threshold_setting_is_named(setting: object) -> None:
    with pytest.raises(ValueError, match=rf"density threshold {setting!r}: give a positive number, 'auto' or 'shape'"):
        check_threshold(setting)


def test_a_number_is_used_as_it_is_and_the_words_are_resolved_per_grid() -> None:
    grid = sample_grid(_soft_ball(14.0), 32)
    solid = sample_grid(lambda points: points.norm(dim=-1), 32) < 0.5
    assert check_threshold(5) == 5.0 and check_threshold("auto") == "auto" and check_threshold("shape") == "shape"
    assert surface_level(grid, 5.0) == 5.0
    assert surface_level(grid, "auto") == silhouette_matched_level(grid)
    assert surface_level(grid, "shape", start_solid=solid) == volume_matched_level(grid, solid)
