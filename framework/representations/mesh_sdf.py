"""Signed distance fields from an inside/outside grid: the target a DMTet's SDF is fitted to.

DMTet starts from the isosurface of a NeRF's density (Magic3D's conversion), from a user's mesh
(Fantasia3D) or from a point-cloud prior's sample of a surface. Each way the shape is first an
occupancy grid (density above the threshold; winding number above 1/2; what the points enclose),
and its signed distance comes from two Euclidean distance transforms
(scipy), exact to the grid's spacing, with the sign exactly the occupancy's. A nearest-point search
against the surface instead is slow far from it and votes the sign from normals, which fails in
concavities (a floater in the DMTet).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor


class GridSDF:
    """A signed distance sampled on the regular grid over [-bound, bound]^3 (indexed x, y, z),
    read anywhere by trilinear interpolation (clamped at the box).

    Args:
        values: [R, R, R] signed distances, negative inside.
        bound: half the box's side.
    """

    def __init__(self, values: Tensor, bound: float = 1.0) -> None:
        self.values = values.float()
        self.bound = bound

    def __call__(self, points: Tensor) -> Tensor:
        # grid_sample reads (x, y, z) as (W, H, D): the volume is stored (D, H, W) = (z, y, x).
        volume = self.values.to(points.device).permute(2, 1, 0)[None, None]
        grid = (points.float() / self.bound).clamp(-1.0, 1.0).view(1, -1, 1, 1, 3)
        return F.grid_sample(volume, grid, mode="bilinear", align_corners=True).view(-1).to(points.dtype)


def sdf_from_occupancy(occupied: np.ndarray, bound: float = 1.0, min_component_fraction: float = 0.0) -> GridSDF:
    """The signed distance of the boundary of `occupied` ([R, R, R] bool over [-bound, bound]^3,
    (x, y, z)): voxels at the boundary sit half a voxel from it. Inside pieces smaller than
    `min_component_fraction` of the largest are dropped first (SDS floaters).

    Raises:
        ValueError: if nothing, or everything, is occupied.
    """
    occupied = np.asarray(occupied, dtype=bool)
    if min_component_fraction > 0 and occupied.any():
        labels, count = ndimage.label(occupied)
        sizes = np.bincount(labels.ravel())[1:]
        occupied = np.isin(labels, 1 + np.flatnonzero(sizes >= min_component_fraction * sizes.max()))
    if not occupied.any() or occupied.all():
        raise ValueError(f"the shape is {'empty' if not occupied.any() else 'the whole box'} on the {occupied.shape[0]}^3 grid: no surface to fit")
    spacing = 2.0 * bound / (occupied.shape[0] - 1)
    outside = ndimage.distance_transform_edt(~occupied) - 0.5
    inside = ndimage.distance_transform_edt(occupied) - 0.5
    return GridSDF(torch.from_numpy(np.where(occupied, -inside, outside) * spacing), bound)


def occupancy_from_surface_points(points: Tensor, resolution: int = 48, bound: float = 1.0, shell_voxels: int = 4, max_shell_voxels: int = 8) -> np.ndarray:
    """[R, R, R] bool over [-bound, bound]^3: the solid that points [N, 3] sampled on a closed
    surface enclose. The points' voxels are thickened into a shell `shell_voxels` wide, so that
    sparse samples leave no gap; what the outside cannot reach through the shell is inside (a
    torus keeps its hole: the outside flows through it); the shell's thickness is then taken off
    again, so the surface sits at the points. A sample with a wider gap (a sampled mug's rim) is
    tried with a shell one voxel wider, up to `max_shell_voxels`.

    Raises:
        ValueError: if the points enclose nothing at any of those shells (too sparse, or not a surface).
    """
    if points.ndim != 2 or points.shape[-1] != 3 or len(points) == 0:
        raise ValueError(f"expected surface points [N, 3], got shape {tuple(points.shape)}")
    index = ((points.detach().cpu().double() / bound + 1.0) * 0.5 * (resolution - 1)).round().long().clamp(0, resolution - 1).numpy()
    hits = np.zeros((resolution,) * 3, dtype=bool)
    hits[index[:, 0], index[:, 1], index[:, 2]] = True
    widest = max(shell_voxels, max_shell_voxels)
    for width in range(shell_voxels, widest + 1):
        ball = ndimage.iterate_structure(ndimage.generate_binary_structure(3, 1), width)
        shell = ndimage.binary_dilation(hits, ball)
        labels, _ = ndimage.label(~shell)
        border = np.unique(np.concatenate([labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel(), labels[:, :, [0, -1]].ravel()]))
        outside = np.isin(labels, border[border > 0])
        if (~outside & ~shell).any():
            return ndimage.binary_erosion(~outside, ball, border_value=0)
    raise ValueError(
        f"the {len(points)} points enclose no volume on the {resolution}^3 grid (shells {shell_voxels} to {widest} voxels): "
        "too sparse, or not a closed surface"
    )


def surface_samples(vertices: Tensor, faces: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """[count, 3] points drawn uniformly by area on the mesh."""
    corners = vertices[faces]
    areas = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0], dim=-1).norm(dim=-1)
    face = torch.multinomial(areas, count, replacement=True, generator=generator)
    u, v = torch.rand(2, count, 1, generator=generator, dtype=vertices.dtype)
    flip = (u + v) > 1
    u, v = torch.where(flip, 1 - u, u), torch.where(flip, 1 - v, v)
    a, b, c = corners[face].unbind(dim=1)
    return a + u * (b - a) + v * (c - a)


def mesh_occupancy(vertices: Tensor, faces: Tensor, resolution: int = 128, bound: float = 1.0, seed: int = 0) -> np.ndarray:
    """[R, R, R] bool: the grid points (x, y, z over [-bound, bound]^3) inside a closed mesh, or on
    it. The surface is drawn into the grid by dense samples (a shell without face-to-face gaps),
    then everything the outside cannot reach through face-adjacent grid points is inside
    (`binary_fill_holes`); holes narrower than a grid cell are closed."""
    vertices, faces = vertices.detach().float().cpu(), faces.detach().long().cpu()
    spacing = 2.0 * bound / (resolution - 1)
    corners = vertices[faces]
    area = float(torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0], dim=-1).norm(dim=-1).sum() / 2)
    count = int(min(5_000_000, max(10_000, 8 * area / (spacing / 2) ** 2)))
    points = surface_samples(vertices, faces, count, torch.Generator().manual_seed(seed))
    index = ((points + bound) / spacing).round().long().clamp(0, resolution - 1)
    shell = np.zeros((resolution,) * 3, dtype=bool)
    shell[index[:, 0].numpy(), index[:, 1].numpy(), index[:, 2].numpy()] = True
    return ndimage.binary_fill_holes(shell)
