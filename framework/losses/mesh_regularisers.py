"""Regularisers of an extracted mesh and of its tet-grid SDF (Magic3D, Fantasia3D, nvdiffrec).

Pure functions of tensors; the system weighs and schedules them. Inside is sdf < 0 and sdf == 0
counts as outside, as in `marching_tetrahedra`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_mesh(vertices: Tensor, faces: Tensor) -> None:
    """Raise a one-line ValueError for a mesh the regularisers cannot measure."""
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"mesh regulariser: vertices must be [M, 3], got {tuple(vertices.shape)}")
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.shape[0] == 0:
        raise ValueError(f"mesh regulariser: faces must be [F, 3] with F >= 1, got {tuple(faces.shape)}")


def _face_edges(faces: Tensor, n_vertices: int) -> Tensor:
    """[3F] keys `min * n_vertices + max` of the faces' edges; face f's edges are rows 3f..3f+2."""
    ends = faces.long()[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    return ends.min(dim=1).values * n_vertices + ends.max(dim=1).values


def laplacian_smoothness(vertices: Tensor, faces: Tensor) -> Tensor:
    """Mean squared norm of the uniform Laplacian (a vertex minus the mean of its neighbours).

    Penalises bumps and spikes on the surface, whose size the grid alone does not limit.

    Args:
        vertices: [M, 3] mesh vertices.
        faces: [F, 3] vertex indices.

    Returns:
        Scalar, averaged over the vertices that belong to a face.
    """
    _check_mesh(vertices, faces)
    n_vertices = vertices.shape[0]
    keys = torch.unique(_face_edges(faces, n_vertices))
    first, second = keys // n_vertices, keys % n_vertices
    ends, others = torch.cat([first, second]), torch.cat([second, first])
    neighbour_sum = torch.zeros_like(vertices).index_add(0, ends, vertices[others])
    degree = torch.bincount(ends, minlength=n_vertices).to(vertices.dtype)
    connected = degree > 0
    laplacian = vertices[connected] - neighbour_sum[connected] / degree[connected, None]
    return laplacian.square().sum(dim=-1).mean()


def normal_consistency(vertices: Tensor, faces: Tensor) -> Tensor:
    """Mean over interior edges of 1 - cos(angle between the normals of the two faces on the edge).

    Penalises creases and folds, which SDS gradients through a rasteriser readily create.

    Args:
        vertices: [M, 3] mesh vertices.
        faces: [F, 3] vertex indices, consistently wound.

    Returns:
        Scalar; zero (still differentiable) for a mesh without interior edges. An edge shared by more
        than two faces (non-manifold) counts as the pairs of consecutive faces around it.
    """
    _check_mesh(vertices, faces)
    corners = vertices[faces.long()]
    normals = F.normalize(torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), dim=-1)
    keys, order = torch.sort(_face_edges(faces, vertices.shape[0]))
    shared = keys[1:] == keys[:-1]
    if not shared.any():
        return vertices[:0].sum()
    face_a, face_b = order[:-1][shared] // 3, order[1:][shared] // 3
    return (1.0 - (normals[face_a] * normals[face_b]).sum(dim=-1)).mean()


def sdf_sign_entropy(sdf: Tensor, edges: Tensor) -> Tensor:
    """Binary cross-entropy between each end's sigmoid(sdf) and the other end's side, over crossed edges.

    Pushes the SDF towards zero on both sides of every crossing, so crossings that no view
    constrains (floaters, internal faces) vanish (nvdiffrec's SDF regulariser, used by Magic3D).

    Args:
        sdf: [V] signed distance at the grid vertices, negative inside.
        edges: [E, 2] grid edges (`tet_edges`).

    Returns:
        Scalar: mean over crossed edges of BCE(s_a, [s_b >= 0]) plus the same with a and b swapped;
        zero (still differentiable) when no edge crosses the surface.
    """
    if sdf.ndim != 1:
        raise ValueError(f"sdf_sign_entropy: sdf must be [V], got {tuple(sdf.shape)}")
    if edges.ndim != 2 or edges.shape[1] != 2:
        raise ValueError(f"sdf_sign_entropy: edges must be [E, 2], got {tuple(edges.shape)}")
    s_a, s_b = sdf[edges[:, 0]], sdf[edges[:, 1]]
    crossed = (s_a < 0) != (s_b < 0)
    if not crossed.any():
        return sdf[:0].sum()
    s_a, s_b = s_a[crossed], s_b[crossed]
    return F.binary_cross_entropy_with_logits(s_a, (s_b >= 0).to(s_a.dtype)) + F.binary_cross_entropy_with_logits(
        s_b, (s_a >= 0).to(s_b.dtype)
    )


def initial_shape_hold(sdf: Tensor, initial_sdf: Tensor, margin: float) -> Tensor:
    """Mean over grid vertices of how far each has crossed to the other side of the initial shape,
    counting only vertices more than `margin` from its surface.

    Refinement near the starting surface is free; what SDS must not do unchecked is move the
    surface far from a start that already has the right size (a thin part thinning away, a shape
    shrinking): in the spirit of Latent-NeRF's sketch-shape loss, on a DMTet's grid. Linear rather
    than squared: a crossed vertex's SDF often sits just past zero, where a square has no pull.

    Args:
        sdf: [V] the grid's current signed distance, negative inside.
        initial_sdf: [V] the signed distance of the shape the grid started from.
        margin: distance from the initial surface within which vertices may change side freely.

    Returns:
        Scalar, zero while no vertex beyond the margin has changed side.
    """
    if sdf.ndim != 1 or sdf.shape != initial_sdf.shape:
        raise ValueError(f"initial_shape_hold: sdf and initial_sdf must both be [V], got {tuple(sdf.shape)} and {tuple(initial_sdf.shape)}")
    if margin < 0:
        raise ValueError(f"initial_shape_hold: margin={margin} must be >= 0")
    beyond_margin = (initial_sdf.abs() > margin).to(sdf.dtype)
    crossed_by = torch.relu(-sdf * torch.sign(initial_sdf))
    return (beyond_margin * crossed_by).mean()
