"""Coloured point clouds of procedural objects: the data of the bundled point-cloud prior and the
ground truth its samples are scored against.

Points are drawn area-weighted from the triangles of the object's marching-cubes mesh
(`object_mesh`), then snapped onto the SDF's zero level by one Newton step. Projecting random
points of the volume onto the zero level would land exactly on the surface but not uniformly: a
point goes to its nearest surface point, so each patch gets the volume it is nearest to, and
edges and corners collect whole wedges of space while curved parts get more or less than their
area. The mesh gives the area measure; the snap removes its flat-facet error (up to a voxel on
curved parts); each point's colour comes from the part nearest to it (a door, a carrot nose),
not from interpolated vertex colours, which would blur the part borders.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from bundled.world.objects import ProceduralObject
from bundled.world.render import object_mesh

MESH_RESOLUTION = 128  # marching-cubes grid: the house's windows stand 2 voxels proud of the wall
_GRADIENT_STEP = 1e-3


@lru_cache(maxsize=None)
def _triangles(obj: ProceduralObject, resolution: int) -> tuple[Tensor, Tensor]:
    """The object's mesh triangles [F, 3, 3] and their areas [F] (geometry only, so per object)."""
    mesh = object_mesh(obj, "red", resolution)  # the colour is irrelevant here
    corners = torch.from_numpy(mesh.vertices[mesh.faces]).float()
    areas = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]).norm(dim=-1) / 2
    return corners, areas


def snap_to_surface(obj: ProceduralObject, points: Tensor) -> Tensor:
    """One Newton step onto the zero level: `p - sdf(p) * grad(sdf)(p)` (central differences) [N, 3]."""
    offsets = torch.eye(3, dtype=points.dtype) * _GRADIENT_STEP
    gradient = torch.stack([obj.evaluate(points + o)[0] - obj.evaluate(points - o)[0] for o in offsets], dim=-1) / (2 * _GRADIENT_STEP)
    distance, _ = obj.evaluate(points)
    return points - distance[:, None] * gradient / gradient.square().sum(-1, keepdim=True).clamp(min=1e-12)


def surface_points(obj: ProceduralObject, colour: str, n: int, generator: torch.Generator, resolution: int = MESH_RESOLUTION) -> tuple[Tensor, Tensor]:
    """`n` points drawn uniformly (by area) on the object's surface, with their part colours.

    Args:
        obj: the object.
        colour: the prompted colour name (parts with a fixed colour keep it).
        n: point count.
        generator: a CPU generator, the only source of randomness (same state, same points).
        resolution: the marching-cubes grid the area measure comes from.

    Returns:
        xyz [n, 3] in the unit sphere and rgb [n, 3] in [0, 1].
    """
    if n < 1:
        raise ValueError(f"n={n} must be at least 1")
    corners, areas = _triangles(obj, resolution)
    faces = torch.multinomial(areas, n, replacement=True, generator=generator)
    # Uniform barycentric coordinates: fold the unit square's upper triangle onto the lower one.
    u, v = torch.rand(2, n, generator=generator)
    outside = u + v > 1
    u, v = torch.where(outside, 1 - u, u), torch.where(outside, 1 - v, v)
    a, b, c = corners[faces].unbind(dim=1)
    xyz = snap_to_surface(obj, a + u[:, None] * (b - a) + v[:, None] * (c - a))
    _, part = obj.evaluate(xyz)
    return xyz, obj.part_colours(colour)[part]
