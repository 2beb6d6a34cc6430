"""The cameras every evaluation uses: spread over azimuth at a low and a high elevation, so that
holes, tops and the object's back all count."""

from __future__ import annotations

import torch

from framework.cameras.camera import CameraBatch

ELEVATIONS_DEG = (15.0, 50.0)
DISTANCE = 2.8
FOVY_DEG = 42.0


def evaluation_cameras(n_views: int, resolution: int = 64) -> CameraBatch:
    """`n_views` cameras: the first half (rounded up) on a ring at 15 degrees starting at the
    front (azimuth 0), the rest on a ring at 50 degrees turned by half its step, so no two views
    share an azimuth when the rings have equal sizes.

    Returns:
        A CameraBatch of n_views cameras at `resolution` x `resolution`, distance 2.8, fovy 42.
    """
    if n_views < 1:
        raise ValueError(f"n_views={n_views} must be at least 1")
    if resolution < 1:
        raise ValueError(f"resolution={resolution} must be at least 1")
    low = (n_views + 1) // 2
    high = n_views - low
    azimuths = [torch.arange(low) * (360.0 / low)]
    elevations = [torch.full((low,), ELEVATIONS_DEG[0])]
    if high:
        azimuths.append((torch.arange(high) + 0.5) * (360.0 / high))
        elevations.append(torch.full((high,), ELEVATIONS_DEG[1]))
    azimuth = (torch.cat(azimuths).float() + 180.0) % 360.0 - 180.0
    return CameraBatch.from_orbit(
        elevation_deg=torch.cat(elevations),
        azimuth_deg=azimuth,
        distance=torch.full((n_views,), DISTANCE),
        fovy_deg=torch.full((n_views,), FOVY_DEG),
        height=resolution,
    )


def cameras_to_json(cameras: CameraBatch) -> list[dict]:
    """One JSON-ready dict per camera: elevation, azimuth, distance, fovy (degrees and world
    units), the OpenGL camera-to-world matrix `c2w` (4x4 rows) and `resolution` [height, width]."""
    return [
        {
            "elevation": float(cameras.elevation_deg[i]),
            "azimuth": float(cameras.azimuth_deg[i]),
            "distance": float(cameras.distance[i]),
            "fovy": float(cameras.fovy_deg[i]),
            "c2w": cameras.c2w[i].tolist(),
            "resolution": [cameras.height, cameras.width],
        }
        for i in range(cameras.batch_size)
    ]
