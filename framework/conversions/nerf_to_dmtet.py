"""NeRF -> DMTet (Magic3D's stage boundary): the density's isosurface becomes the DMTet's SDF.

The density is sampled on a grid; where it exceeds the surface level is inside (floaters
dropped; the level is the one whose silhouettes match the NeRF's rendered ones, or whose inside
has the volume of the shape the NeRF started from, unless a number is given:
`framework.export.density_level`), and the DMTet's SDF is fitted to the signed distance
from that inside's boundary (its deformation starts at zero).
The colour carries over: the DMTet's colour field is a copy of the NeRF field (same
architecture, same weights), which the fine stage goes on training.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Mapping

from torch import nn

from framework.cameras.camera import CameraBatch
from framework.export.density_level import check_threshold
from framework.export.marching_cubes import field_surface_level, sample_grid
from framework.representations.dmtet import DMTet
from framework.representations.mesh_sdf import sdf_from_occupancy
from framework.representations.nerf import NeRFField


class NeRFToDMTet:
    """Args:
    dmtet: builds the (empty) DMTet: a callable taking `init` and `colour` keyword arguments
        (a Hydra `_partial_` of `DMTet`).
    target: the name of the representation it makes.
    density_threshold: the density level taken as the surface, "auto" (silhouette-matched) or
        "shape" (volume-matched to the NeRF's start shape, `representation.shape`).
    covered_opacity: with "auto", the rendered opacity from which the NeRF's silhouettes count as
        covered (lower keeps more of a soft NeRF's halo).
    grid_resolution: density samples per axis over [-1, 1]^3.
    min_component_fraction: floaters smaller than this fraction of the main body are dropped.
    fit_steps: Adam steps fitting a field SDF to the surface (per-vertex SDFs are set directly).
    seed: of the fit.
    """

    def __init__(
        self,
        dmtet: Callable[..., DMTet],
        target: str = "dmtet",
        density_threshold: float | str = "auto",
        covered_opacity: float = 0.5,
        grid_resolution: int = 128,
        min_component_fraction: float = 0.05,
        fit_steps: int = 300,
        seed: int = 0,
    ) -> None:
        self.dmtet = dmtet
        self.target = target
        self.density_threshold = check_threshold(density_threshold)
        self.covered_opacity = covered_opacity
        self.grid_resolution = grid_resolution
        self.min_component_fraction = min_component_fraction
        self.fit_steps = fit_steps
        self.seed = seed

    def __call__(self, source: NeRFField, render: Callable[[CameraBatch], dict]) -> DMTet:
        device = next(source.parameters()).device
        density = sample_grid(source.density, self.grid_resolution, device=device)
        try:
            level = field_surface_level(source, density, self.density_threshold, self.covered_opacity, device=device)
            target = sdf_from_occupancy(density > level, min_component_fraction=self.min_component_fraction)
        except ValueError as error:
            raise ValueError(
                f"NeRF -> DMTet: {error} at density_threshold={self.density_threshold} (the density spans "
                f"{density.min():.3g} to {density.max():.3g}; set system.stages.<fine stage>.convert.density_threshold)"
            ) from None
        dmtet = self.dmtet(init="none", colour=copy.deepcopy(source)).to(device)
        dmtet.fit_sdf(target, self.fit_steps, self.seed)
        return dmtet

    def placeholder(self, shape_state: Mapping[str, Any], source: nn.Module | None = None) -> DMTet:
        """An empty DMTet of the configured shape to load a checkpoint into; its colour field is
        a copy of `source` (the NeRF), whose weights the checkpoint replaces."""
        return self.dmtet(init="none", colour=copy.deepcopy(source) if source is not None else None)
