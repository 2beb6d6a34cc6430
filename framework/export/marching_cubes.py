"""Triangle meshes from density fields: marching cubes on a sampled grid, and floater removal.

NeRF densities and Gaussian opacity fields become meshes here (Magic3D's NeRF to DMTet start,
DreamGaussian's Gaussians to mesh stage, every mesh export). A field is "inside" where its value
exceeds the threshold; the meshes come out in world coordinates with outward-facing,
counter-clockwise triangles.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from framework.export.density_level import surface_level


@torch.no_grad()
def sample_grid(
    field: Callable[[Tensor], Tensor],
    resolution: int,
    bound: float = 1.0,
    chunk: int = 65536,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Evaluate `field` on a regular grid over [-bound, bound]^3, `chunk` points at a time.

    Points are generated per chunk, so memory stays at `chunk` points however fine the grid.

    Args:
        field: maps [N, 3] world points to [N] values (a trailing [N, 1] is accepted).
        resolution: samples per axis, the first and last on the box faces.
        bound: half the side of the box.
        chunk: points per call to `field`.
        device: where the points are made and `field` runs.

    Returns:
        [resolution, resolution, resolution] float32 values indexed (x, y, z).
    """
    axis = torch.linspace(-bound, bound, resolution, device=device)
    total = resolution**3
    values = torch.empty(total, dtype=torch.float32)
    for start in range(0, total, chunk):
        index = torch.arange(start, min(start + chunk, total), device=device)
        ijk = torch.stack([index // resolution**2, (index // resolution) % resolution, index % resolution], dim=-1)
        values[start : start + len(index)] = field(axis[ijk]).reshape(-1).float().cpu()
    return values.view(resolution, resolution, resolution).numpy()


def field_surface_level(
    field: nn.Module, density: np.ndarray, threshold: float | str, covered_opacity: float = 0.5, bound: float = 1.0, device: torch.device | str = "cpu"
) -> float:
    """The level a threshold setting means for `field`, whose density `sample_grid` gave as `density`
    (`framework.export.density_level.surface_level`; for "shape" the field's `shape`, the signed
    distance it started from, is sampled on the same grid)."""
    shape = getattr(field, "shape", None) if threshold == "shape" else None
    solid = None if shape is None else sample_grid(shape, density.shape[0], bound, device=device) < 0
    return surface_level(density, threshold, bound, covered_opacity, start_solid=solid)


def mesh_from_grid(volume: np.ndarray, threshold: float, bound: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Mesh the level set `volume == threshold` of densities sampled on the grid of `sample_grid`
    ([R, R, R], (x, y, z) order, over [-bound, bound]^3; inside where `volume > threshold`).

    The grid is padded with one layer of "outside", so a surface cut by the box still closes: its
    cap lies at most one grid cell outside [-bound, bound]^3.

    Returns:
        vertices: [V, 3] float32 world positions.
        faces: [F, 3] int64 vertex indices, counter-clockwise seen from outside.

    Raises:
        ValueError: if the volume never crosses `threshold` (the message gives the threshold and
            the volume's range, the usual sign of a wrong threshold or an empty model).
    """
    from skimage.measure import marching_cubes

    volume = np.asarray(volume, dtype=np.float32)
    resolution = volume.shape[0]
    low, high = float(volume.min()), float(volume.max())
    if not low < threshold < high:
        raise ValueError(f"empty level set: threshold {threshold} is outside the field's range [{low:.6g}, {high:.6g}]")
    volume = np.pad(volume, 1, constant_values=low)
    spacing = 2.0 * bound / (resolution - 1)
    # "ascent": values grow towards the inside, which makes skimage's triangles face outwards.
    vertices, faces, _, _ = marching_cubes(volume, level=threshold, spacing=(spacing,) * 3, gradient_direction="ascent")
    vertices = vertices - (bound + spacing)
    return vertices.astype(np.float32), faces.astype(np.int64)


def decimate(vertices: np.ndarray, faces: np.ndarray, target_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadric edge-collapse decimation (fast-simplification through trimesh) down to about
    `target_faces`; marching cubes makes far more triangles than a texture stage needs."""
    import trimesh

    if target_faces < 4:
        raise ValueError(f"target_faces={target_faces}: need at least 4")
    if len(faces) <= target_faces:
        return np.asarray(vertices, dtype=np.float32), np.asarray(faces, dtype=np.int64)
    mesh = trimesh.Trimesh(vertices, faces, process=False).simplify_quadric_decimation(face_count=target_faces)
    return np.asarray(mesh.vertices, dtype=np.float32), np.asarray(mesh.faces, dtype=np.int64)


def remove_floaters(vertices: np.ndarray, faces: np.ndarray, min_fraction: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Drop connected components smaller than `min_fraction` of the largest one (by face count).

    SDS optimisation leaves small blobs of density in empty space; they would show up as
    specks in every export. `min_fraction=1` keeps only the largest component(s).

    Args:
        vertices: [V, 3] float positions.
        faces: [F, 3] int vertex indices.
        min_fraction: the smallest component kept, relative to the largest.

    Returns:
        vertices: [V', 3] float32, the vertices still referenced.
        faces: [F', 3] int64, re-indexed into the kept vertices.
    """
    import trimesh

    mesh = trimesh.Trimesh(vertices, faces, process=False)
    labels = trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(faces))
    sizes = np.bincount(labels)
    mesh.update_faces(sizes[labels] >= min_fraction * sizes.max())
    mesh.remove_unreferenced_vertices()
    return np.asarray(mesh.vertices, dtype=np.float32), np.asarray(mesh.faces, dtype=np.int64)
