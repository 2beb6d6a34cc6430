"""Marching tetrahedra: the differentiable surface of an SDF sampled on a tet grid (DMTet).

Inside is sdf < 0; sdf == 0 counts as outside, everywhere. Each edge whose ends lie on different
sides carries one mesh vertex, the zero crossing of the SDF interpolated linearly along the edge,
so gradients reach both the SDF and the (deformed) grid vertices through the crossings. The tets
around an edge share its vertex, which makes the mesh watertight on a conforming grid.
"""

from __future__ import annotations

import torch
from torch import Tensor

from framework.representations.tetrahedral_grid import TET_EDGE_CORNERS


def _triangle_table() -> tuple[Tensor, Tensor]:
    """Per inside/outside pattern of a tet's corners, its triangles as local edge ids.

    The pattern's bit c is set when corner c is inside. One lone corner (1 or 3 inside) cuts one
    triangle; 2 inside cut a quad, split in two. The winding is derived on a reference positively
    oriented tet: counter-clockwise seen from the outside corners. Within a tet the interpolated
    SDF is affine, so an orientation-preserving map keeps this true for every positive tet.

    Returns:
        table: [16, 2, 3] local edge ids (slots of TET_EDGE_CORNERS), -1 where a pattern has fewer
            than 2 triangles.
        counts: [16] triangles per pattern.
    """
    corners = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    midpoints = corners[TET_EDGE_CORNERS].mean(dim=1)
    edge_ids = {tuple(pair): slot for slot, pair in enumerate(TET_EDGE_CORNERS.tolist())}

    def edge(a: int, b: int) -> int:
        return edge_ids[(min(a, b), max(a, b))]

    table = torch.full((16, 2, 3), -1, dtype=torch.long)
    counts = torch.zeros(16, dtype=torch.long)
    for pattern in range(1, 15):
        inside = [c for c in range(4) if pattern >> c & 1]
        outside = [c for c in range(4) if not pattern >> c & 1]
        if len(inside) == 2:
            (a, b), (c, d) = inside, outside
            quad = [edge(a, c), edge(a, d), edge(b, d), edge(b, c)]  # consecutive ones share a corner
            triangles = [quad[:3], [quad[0], quad[2], quad[3]]]
        else:
            lone, others = (inside[0], outside) if len(inside) == 1 else (outside[0], inside)
            triangles = [[edge(lone, other) for other in others]]
        outward = corners[outside].mean(dim=0) - corners[inside].mean(dim=0)
        for slot, triangle in enumerate(triangles):
            p0, p1, p2 = midpoints[triangle]
            if torch.linalg.cross(p1 - p0, p2 - p0) @ outward < 0:
                triangle = [triangle[0], triangle[2], triangle[1]]
            table[pattern, slot] = torch.tensor(triangle)
        counts[pattern] = len(triangles)
    return table, counts


_TRIANGLE_TABLE, _TRIANGLE_COUNTS = _triangle_table()


def _check_inputs(vertices: Tensor, tets: Tensor, sdf: Tensor) -> None:
    """Raise a one-line ValueError for inputs marching tetrahedra cannot extract a surface from."""
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"marching tetrahedra: vertices must be [V, 3], got {tuple(vertices.shape)}")
    if tets.ndim != 2 or tets.shape[1] != 4 or tets.dtype.is_floating_point:
        raise ValueError(f"marching tetrahedra: tets must be integer [T, 4], got {tets.dtype} {tuple(tets.shape)}")
    n_vertices = vertices.shape[0]
    if sdf.shape != (n_vertices,):
        raise ValueError(f"marching tetrahedra: sdf must be [V] = [{n_vertices}], got {tuple(sdf.shape)}")
    if tets.numel() and (int(tets.min()) < 0 or int(tets.max()) >= n_vertices):
        raise ValueError(
            f"marching tetrahedra: tet indices span [{int(tets.min())}, {int(tets.max())}], outside [0, {n_vertices})"
        )
    n_bad = int((~torch.isfinite(sdf)).sum())
    if n_bad:
        raise ValueError(
            f"marching tetrahedra: the SDF has {n_bad} NaN or infinite values (of {n_vertices}); "
            "the SDF network diverged: lower its learning rate or check its input"
        )
    n_inside = int((sdf < 0).sum())
    if n_inside == 0:
        raise ValueError(
            f"marching tetrahedra: the SDF is positive (>= 0) at all {n_vertices} grid vertices (empty shape), "
            "so there is no surface; initialise the SDF with a shape (negative inside) or move its offset down"
        )
    if n_inside == n_vertices:
        raise ValueError(
            f"marching tetrahedra: the SDF is negative at all {n_vertices} grid vertices (full grid), "
            "so there is no surface; enlarge the grid's scale or move the SDF's offset up"
        )


def marching_tetrahedra(vertices: Tensor, tets: Tensor, sdf: Tensor) -> tuple[Tensor, Tensor]:
    """The triangle mesh of the SDF's zero level set, differentiable in `sdf` and `vertices`.

    A mesh vertex sits where the SDF, linear along a crossed edge (a, b), is zero:
    p = (v_a * s_b - v_b * s_a) / (s_b - s_a). Only tets whose corners have mixed signs are visited.

    Args:
        vertices: [V, 3] grid vertices (possibly deformed).
        tets: [T, 4] vertex indices, positively oriented (as `cube_tetrahedra` makes them); the
            winding of the faces follows from it.
        sdf: [V] signed distance at the vertices, negative inside.

    Returns:
        mesh_vertices: [M, 3] one per crossed edge, each used by a face, in `vertices`' dtype.
        faces: [F, 3] int64, counter-clockwise seen from outside (normals towards sdf >= 0).

    Raises:
        ValueError: bad shapes, a NaN or infinite SDF, or an SDF without a surface (empty or full).
    """
    _check_inputs(vertices, tets, sdf)
    n_vertices = vertices.shape[0]
    inside = sdf < 0
    corner_inside = inside[tets]
    n_inside = corner_inside.sum(dim=1)
    mixed = (n_inside > 0) & (n_inside < 4)
    tets, corner_inside = tets[mixed].long(), corner_inside[mixed]

    edge_corners = TET_EDGE_CORNERS.to(tets.device)
    ends = tets[:, edge_corners]
    crossed = corner_inside[:, edge_corners[:, 0]] != corner_inside[:, edge_corners[:, 1]]
    keys = ends.min(dim=2).values[crossed] * n_vertices + ends.max(dim=2).values[crossed]
    edge_keys, mesh_index = torch.unique(keys, return_inverse=True)
    edge_vertex = torch.full(crossed.shape, -1, dtype=torch.long, device=tets.device)
    edge_vertex[crossed] = mesh_index

    a, b = edge_keys // n_vertices, edge_keys % n_vertices
    s_a, s_b = sdf[a, None], sdf[b, None]
    mesh_vertices = (vertices[a] * s_b - vertices[b] * s_a) / (s_b - s_a)

    pattern = (corner_inside.long() << torch.arange(4, device=tets.device)).sum(dim=1)
    triangles = _TRIANGLE_TABLE.to(tets.device)[pattern]
    present = torch.arange(2, device=tets.device) < _TRIANGLE_COUNTS.to(tets.device)[pattern, None]
    faces = torch.gather(edge_vertex, 1, triangles.clamp(min=0).reshape(-1, 6)).reshape(-1, 2, 3)[present]
    return mesh_vertices, faces
