"""The density level of a NeRF's surface, chosen from the NeRF itself.

A fixed level (DreamFusion's 5, say) cuts different fields at different depths: a NeRF whose
densities peak at 14 loses its thin parts at 5 (a cone's tip and rim), while one that peaks at 100
keeps a soft shell. The level is instead the one whose level set casts the same silhouettes as the
volume rendering does. Along rays parallel to the grid's axes (orthographic views from the front,
the side and above) the rendered opacity is `1 - exp(-sum(density) * spacing)` and the field's
silhouette is where it exceeds a covered opacity (one half unless told); the level set
`density > level` covers exactly the rays whose largest density exceeds the level. The level whose
silhouettes best match (mean IoU over the three views) is taken.

A NeRF started from a 3D prior's solid (`representation.shape`) can take its size from that solid
instead ("shape"): the level whose inside holds as many grid samples as the solid does. SDS under a
2D prior draws the outline but blurs the rim, where the silhouette cut is a guess (a round NeRF's
soft rim belongs to it, a flat-sided one's halo does not); the point prior's sample comes within
a few per cent of the true size (docs/magic3d_notes.md).
"""

from __future__ import annotations

import math

import numpy as np
import torch

# Candidate levels: log-spaced from this fraction of the largest density up to just below it.
_LOWEST_FRACTION = 1e-3
_CANDIDATES = 64


def silhouette_matched_level(density: np.ndarray, bound: float = 1.0, covered_opacity: float = 0.5) -> float:
    """The density level whose level set best reproduces the field's rendered silhouettes.

    Args:
        density: [R, R, R] densities sampled on a regular grid over [-bound, bound]^3 (as
            `framework.export.marching_cubes.sample_grid` returns them).
        bound: half the side of the sampled box.
        covered_opacity: the rendered opacity from which a ray counts as covered (lower: the
            level set takes in more of a soft field's halo).

    Returns:
        The level (a density value inside the grid's range).

    Raises:
        ValueError: if no ray is rendered opaque (an empty field has no surface to match), or
            `covered_opacity` is not in (0, 1).
    """
    if not 0.0 < covered_opacity < 1.0:
        raise ValueError(f"covered opacity {covered_opacity!r}: give a number between 0 and 1")
    grid = torch.from_numpy(np.ascontiguousarray(density)).double()
    spacing = 2.0 * bound / (grid.shape[0] - 1)
    covered = torch.stack([1.0 - torch.exp(-grid.sum(axis) * spacing) > covered_opacity for axis in range(3)])
    if not covered.any():
        raise ValueError(
            f"no ray through the density grid reaches opacity {covered_opacity} (densities {grid.min():.3g} to "
            f"{grid.max():.3g}): the field is empty, so no surface level can be chosen"
        )
    peak = torch.stack([grid.amax(axis) for axis in range(3)])
    highest = float(grid.max())
    levels = torch.logspace(math.log10(highest * _LOWEST_FRACTION), math.log10(highest * 0.99), _CANDIDATES, dtype=torch.float64)
    cast = peak[None] > levels[:, None, None, None]  # [levels, 3 views, R, R]
    intersection = (cast & covered).flatten(2).sum(-1)
    union = (cast | covered).flatten(2).sum(-1).clamp_min(1)
    agreement = (intersection / union).mean(-1)
    return float(levels[int(agreement.argmax())])


def volume_matched_level(density: np.ndarray, solid: np.ndarray) -> float:
    """The density level whose level set holds as many grid samples as `solid` ([R, R, R] bool on the
    same grid): halfway between the densities ranked at the solid's sample count and the next.

    Raises:
        ValueError: if `solid` is empty or fills the grid, or its shape is not the density's.
    """
    solid = np.asarray(solid, dtype=bool)
    if solid.shape != density.shape:
        raise ValueError(f"the start solid's grid {solid.shape} is not the density's {density.shape}")
    inside = int(solid.sum())
    if not 0 < inside < solid.size:
        raise ValueError(f"the start solid holds {inside} of {solid.size} grid samples: no level set can match its volume")
    ranked = np.sort(np.asarray(density, dtype=np.float64).ravel())[::-1]
    return float(0.5 * (ranked[inside - 1] + ranked[inside]))


THRESHOLD_WORDS = ("auto", "shape")


def check_threshold(threshold: float | str) -> float | str:
    """A density-threshold setting: a number, "auto" (`silhouette_matched_level`) or "shape"
    (`volume_matched_level` against the field's start shape).

    Raises:
        ValueError: naming any other value.
    """
    if threshold in THRESHOLD_WORDS:
        return threshold
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold > 0:
        raise ValueError(f"density threshold {threshold!r}: give a positive number, 'auto' or 'shape'")
    return float(threshold)


def surface_level(
    density: np.ndarray, threshold: float | str, bound: float = 1.0, covered_opacity: float = 0.5, start_solid: np.ndarray | None = None
) -> float:
    """The level a `check_threshold` setting means for this grid of `density` ("auto": the
    silhouettes where the rendered opacity exceeds `covered_opacity`; "shape": the volume of
    `start_solid`, the inside of the field's start shape on the same grid).

    Raises:
        ValueError: "shape" without a `start_solid` (a field started from no shape), or as the
            level choosers raise.
    """
    if threshold == "auto":
        return silhouette_matched_level(density, bound, covered_opacity)
    if threshold == "shape":
        if start_solid is None:
            raise ValueError(
                "density threshold 'shape' takes the volume of the shape the field started from, and this field has none "
                "(representation.shape=null): give 'auto' or a number"
            )
        return volume_matched_level(density, start_solid)
    return float(threshold)
