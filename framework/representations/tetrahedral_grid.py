"""A regular tetrahedral grid of a cube, generated in code: DMTet's domain.

Each cube of a regular grid is split into 6 tetrahedra that share the cube's main diagonal
(Kuhn / Freudenthal subdivision). Every cube is split the same way, so two neighbouring cubes cut
their common square along the same diagonal: the grid is conforming (each interior triangle is the
face of exactly two tets), which is what makes the surface marching tetrahedra extracts watertight.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

TET_EDGE_CORNERS = torch.tensor([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]])
"""The 6 edges of a tetrahedron as pairs of its corner slots (0..3)."""


def _kuhn_cube_tetrahedra() -> Tensor:
    """The 6 tets of the unit cube as [6, 4, 3] integer corner offsets, each positively oriented.

    Each tet is a monotone path from corner (0, 0, 0) to (1, 1, 1), one axis step at a time, in one
    of the 3! axis orders; the odd orders give negative volumes, so two corners are swapped there.
    """
    tets = []
    for order in itertools.permutations(range(3)):
        corner = [0, 0, 0]
        path = [list(corner)]
        for axis in order:
            corner[axis] = 1
            path.append(list(corner))
        tets.append(path)
    offsets = torch.tensor(tets)
    edges = (offsets[:, 1:] - offsets[:, :1]).double()
    negative = torch.linalg.det(edges) < 0
    offsets[negative] = offsets[negative][:, [0, 2, 1, 3]]
    return offsets


def cube_tetrahedra(resolution: int, scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """The conforming Kuhn tetrahedral grid of the cube [-scale, scale]^3.

    Args:
        resolution: cubes per axis (>= 1).
        scale: half the side of the cube (> 0).

    Returns:
        vertices: [(resolution + 1)^3, 3] float32 grid points, x-major (index (i * n + j) * n + k
            for n = resolution + 1).
        tets: [6 * resolution^3, 4] int64 vertex indices, every tet with positive signed volume
            det(v1 - v0, v2 - v0, v3 - v0) > 0.
    """
    if resolution < 1:
        raise ValueError(f"cube_tetrahedra: resolution must be >= 1, got {resolution}")
    if scale <= 0:
        raise ValueError(f"cube_tetrahedra: scale must be > 0, got {scale}")
    n = resolution + 1
    axis = torch.linspace(-scale, scale, n, dtype=torch.float64)
    vertices = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3).float()

    cube = torch.arange(resolution)
    i, j, k = torch.meshgrid(cube, cube, cube, indexing="ij")
    cube_origins = ((i * n + j) * n + k).reshape(-1, 1, 1)
    offsets = _kuhn_cube_tetrahedra()
    corner_steps = (offsets[..., 0] * n + offsets[..., 1]) * n + offsets[..., 2]
    tets = (cube_origins + corner_steps).reshape(-1, 4)
    return vertices, tets


def tet_edges(tets: Tensor) -> Tensor:
    """The unique edges of a tet mesh (for edge-based regularisers such as the SDF sign entropy).

    Args:
        tets: [T, 4] vertex indices.

    Returns:
        [E, 2] int64 edges, each with its smaller index first, rows sorted.
    """
    if tets.ndim != 2 or tets.shape[1] != 4 or tets.shape[0] == 0:
        raise ValueError(f"tet_edges: tets must be [T, 4] with T >= 1, got {tuple(tets.shape)}")
    ends = tets.long()[:, TET_EDGE_CORNERS.to(tets.device)].reshape(-1, 2)
    first, second = ends.min(dim=1).values, ends.max(dim=1).values
    n_vertices = int(tets.max()) + 1
    keys = torch.unique(first * n_vertices + second)
    return torch.stack([keys // n_vertices, keys % n_vertices], dim=1)
