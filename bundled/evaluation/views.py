"""The cameras every evaluation uses: spread over azimuth at a low and a high elevation, so that
holes, tops and the object's back all count."""

from __future__ import annotations

from framework.cameras.camera import CameraBatch
from framework.cameras.distribution import orbit_ring

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
    rings = [orbit_ring(low, ELEVATIONS_DEG[0], DISTANCE, FOVY_DEG, resolution)]
    if high:
        rings.append(orbit_ring(high, ELEVATIONS_DEG[1], DISTANCE, FOVY_DEG, resolution, start_azimuth_deg=180.0 / high))
    return CameraBatch.cat(rings)


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
