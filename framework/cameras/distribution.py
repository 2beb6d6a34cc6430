"""The random orbit camera distribution shared by the SDS sampler and the bundled prior's data."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from framework.cameras.camera import CameraBatch


@dataclass
class OrbitDistribution:
    """Uniform ranges (degrees, world units) of the orbit cameras that look at the origin.

    Azimuth is drawn uniformly; elevation uniformly in degrees (not area-uniform on the sphere),
    as DreamFusion and threestudio do.
    """

    elevation_range: tuple[float, float] = (-10.0, 75.0)
    azimuth_range: tuple[float, float] = (-180.0, 180.0)
    distance_range: tuple[float, float] = (2.6, 3.0)
    fovy_range: tuple[float, float] = (40.0, 45.0)

    def __post_init__(self) -> None:
        for name in ("elevation_range", "azimuth_range", "distance_range", "fovy_range"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name}={getattr(self, name)!r}: the lower bound exceeds the upper bound")
        if not (-90.0 <= self.elevation_range[0] and self.elevation_range[1] <= 90.0):
            raise ValueError(f"elevation_range={self.elevation_range!r} must lie within [-90, 90] degrees")
        if self.distance_range[0] <= 1.0:
            raise ValueError(f"distance_range={self.distance_range!r}: cameras must stay outside the unit sphere")
        if not (0.0 < self.fovy_range[0] and self.fovy_range[1] < 180.0):
            raise ValueError(f"fovy_range={self.fovy_range!r} must lie within (0, 180) degrees")

    def sample(self, batch_size: int, resolution: int, generator: torch.Generator) -> CameraBatch:
        def uniform(bounds: tuple[float, float]) -> torch.Tensor:
            u = torch.rand(batch_size, generator=generator)
            return bounds[0] + (bounds[1] - bounds[0]) * u

        return CameraBatch.from_orbit(
            elevation_deg=uniform(self.elevation_range),
            azimuth_deg=uniform(self.azimuth_range),
            distance=uniform(self.distance_range),
            fovy_deg=uniform(self.fovy_range),
            height=resolution,
        )

    def sample_groups(self, n_groups: int, views: int, resolution: int, generator: torch.Generator) -> CameraBatch:
        """`n_groups` groups of `views` cameras (MVDream's view sets): one elevation, distance and
        field of view per group, azimuths `360 / views` degrees apart from a random start.
        Consecutive cameras form a group."""
        anchors = self.sample(n_groups, resolution, generator)
        offsets = torch.arange(views, dtype=torch.float32) * (360.0 / views)
        azimuth = (anchors.azimuth_deg[:, None] + offsets + 180.0) % 360.0 - 180.0
        repeat = lambda values: values.repeat_interleave(views)  # noqa: E731
        return CameraBatch.from_orbit(repeat(anchors.elevation_deg), azimuth.reshape(-1), repeat(anchors.distance), repeat(anchors.fovy_deg), resolution)


def orbit_ring(
    n_views: int,
    elevation_deg: float,
    distance: float,
    fovy_deg: float,
    resolution: int,
    start_azimuth_deg: float = 0.0,
) -> CameraBatch:
    """`n_views` cameras evenly spread in azimuth at one elevation (validation and turntables)."""
    azimuth = start_azimuth_deg + torch.arange(n_views, dtype=torch.float32) * (360.0 / n_views)
    azimuth = (azimuth + 180.0) % 360.0 - 180.0
    return CameraBatch.from_orbit(
        elevation_deg=torch.full((n_views,), float(elevation_deg)),
        azimuth_deg=azimuth,
        distance=torch.full((n_views,), float(distance)),
        fovy_deg=torch.full((n_views,), float(fovy_deg)),
        height=resolution,
    )
