"""framework.representations.mesh_sdf: the SDF of an occupancy grid against analytic distances,
floater removal, inside/outside of closed meshes, the solid that surface points enclose,
area-uniform surface samples, and GridSDF's (x, y, z) indexing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from framework.representations.mesh_sdf import GridSDF, mesh_occupancy, occupancy_from_surface_points, sdf_from_occupancy, surface_samples


def _grid_points(resolution: int, bound: float = 1.0) -> np.ndarray:
    """[R, R, R, 3] the grid's points, indexed (x, y, z) like the occupancy grids."""
    axis = np.linspace(-bound, bound, resolution)
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_sdf_of_a_sphere_occupancy_matches_the_true_distance() -> None:
    """On the grid and between its points: within about one grid spacing of |p| - r, with the
    right sign wherever the surface is more than a spacing away."""
    resolution, radius = 40, 0.5
    points = _grid_points(resolution)
    spacing = 2.0 / (resolution - 1)
    sdf = sdf_from_occupancy(np.linalg.norm(points, axis=-1) < radius)
    torch.testing.assert_close(sdf.values, torch.from_numpy(np.linalg.norm(points, axis=-1) - radius).float(), atol=spacing, rtol=0)
    queries = torch.rand(4000, 3, generator=torch.Generator().manual_seed(0)) * 1.8 - 0.9
    truth = queries.norm(dim=-1) - radius
    values = sdf(queries)
    assert (values - truth).abs().max() < 1.2 * spacing
    far = truth.abs() > spacing
    assert torch.equal(values[far] < 0, truth[far] < 0)


@pytest.mark.parametrize(("fill", "named"), [(False, "empty"), (True, "the whole box")])
def test_empty_or_full_occupancy_has_no_surface(fill: bool, named: str) -> None:
    with pytest.raises(ValueError, match=f"the shape is {named} on the 8\\^3 grid: no surface to fit"):
        sdf_from_occupancy(np.full((8, 8, 8), fill))


def test_a_small_floater_is_dropped_by_min_component_fraction() -> None:
    points = _grid_points(32)
    occupied = np.linalg.norm(points, axis=-1) < 0.5
    occupied[1:3, 1:3, 1:3] = True  # 8 voxels in a corner, far from the body
    floater = torch.tensor([[points[1, 1, 1, 0] + 0.03, points[1, 1, 1, 1] + 0.03, points[1, 1, 1, 2] + 0.03]], dtype=torch.float32)
    assert sdf_from_occupancy(occupied)(floater).item() < 0
    assert sdf_from_occupancy(occupied, min_component_fraction=0.05)(floater).item() > 0
    assert sdf_from_occupancy(occupied, min_component_fraction=0.05)(torch.zeros(1, 3)).item() < 0  # the body stays


def test_mesh_occupancy_of_a_closed_box_and_a_torus_is_their_inside() -> None:
    """Every grid point inside is occupied, and every occupied one is inside or on the surface
    (the shell's points are the samples' nearest grid points: at most half a cell diagonal out).
    A torus checks that its hole stays outside (the fill reaches it from the outside)."""
    resolution = 64
    points = _grid_points(resolution)
    spacing = 2.0 / (resolution - 1)
    box = trimesh.creation.box(extents=(1.2, 0.8, 0.5))
    box.apply_translation((0.1, -0.2, 0.05))
    q = np.abs(points - (0.1, -0.2, 0.05)) - np.array([0.6, 0.4, 0.25])
    box_sdf = np.linalg.norm(np.maximum(q, 0.0), axis=-1) + np.minimum(q.max(axis=-1), 0.0)
    torus = trimesh.creation.torus(major_radius=0.55, minor_radius=0.2, major_sections=64, minor_sections=32)
    torus_sdf = np.hypot(np.linalg.norm(points[..., :2], axis=-1) - 0.55, points[..., 2]) - 0.2
    for mesh, sdf in ((box, box_sdf), (torus, torus_sdf)):
        occupied = mesh_occupancy(torch.tensor(mesh.vertices), torch.tensor(mesh.faces), resolution=resolution)
        assert occupied.shape == (resolution,) * 3 and occupied.dtype == bool
        assert occupied[sdf < 0].all()
        assert sdf[occupied].max() <= np.sqrt(3) / 2 * spacing
        assert _iou(occupied, sdf <= spacing / 2) > 0.95
    assert not occupied[resolution // 2, resolution // 2, resolution // 2], "the torus's hole is outside"


def test_surface_samples_lie_on_the_mesh_uniformly_by_area() -> None:
    """On a 2 x 1 x 1 box the two 1 x 1 faces at x = +-1 hold 2 / 10 of the area."""
    box = trimesh.creation.box(extents=(2.0, 1.0, 1.0))
    samples = surface_samples(torch.tensor(box.vertices, dtype=torch.float32), torch.tensor(box.faces), 20000, torch.Generator().manual_seed(0))
    q = samples.abs() - torch.tensor([1.0, 0.5, 0.5])
    assert q.max(dim=-1).values.abs().max() < 1e-5  # every sample is on a face
    on_end_faces = (q[:, 0].abs() < 1e-5).float().mean().item()
    assert on_end_faces == pytest.approx(0.2, abs=0.015)


def test_grid_sdf_reads_its_values_as_x_y_z() -> None:
    """A linear field with different slopes per axis is read back exactly (trilinear), and points
    outside the box take the value at its face."""
    resolution, bound = 9, 0.8
    points = torch.from_numpy(_grid_points(resolution, bound)).float()
    slopes = torch.tensor([1.0, 10.0, 100.0])
    grid = GridSDF(points @ slopes, bound)
    queries = (torch.rand(500, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1) * bound
    torch.testing.assert_close(grid(queries), queries @ slopes, atol=1e-4, rtol=0)
    outside = torch.tensor([[2.0, 0.0, 0.0], [0.0, -2.0, 0.0], [0.0, 0.0, 2.0]])
    torch.testing.assert_close(grid(outside), torch.tensor([0.8, -8.0, 80.0]), atol=1e-4, rtol=0)
    assert grid(queries.double()).dtype == torch.float64


def test_sparse_surface_points_of_a_sphere_and_a_torus_enclose_their_solids() -> None:
    """1,024 random points (a point-cloud prior's count) on a sphere and on a torus: the enclosed
    solid matches each true inside (IoU on the 48^3 grid: 0.90 and 0.81 measured, the torus's tube
    under 5 voxels thick), and the torus keeps its hole."""
    generator = torch.Generator().manual_seed(0)
    resolution = 48
    grid = _grid_points(resolution)
    sphere = torch.nn.functional.normalize(torch.randn(1024, 3, generator=generator), dim=-1) * 0.5
    u, v = (torch.rand(2, 1024, generator=generator) * 2 * np.pi).unbind()
    ring, tube = 0.5, 0.2
    torus = torch.stack([(ring + tube * v.cos()) * u.cos(), (ring + tube * v.cos()) * u.sin(), tube * v.sin()], dim=-1)
    true_sphere = np.linalg.norm(grid, axis=-1) < 0.5
    true_torus = (np.linalg.norm(grid[..., :2], axis=-1) - ring) ** 2 + grid[..., 2] ** 2 < tube**2
    for points, truth, floor in ((sphere, true_sphere, 0.85), (torus, true_torus, 0.75)):
        assert _iou(occupancy_from_surface_points(points, resolution), truth) > floor
    centre = resolution // 2
    assert not occupancy_from_surface_points(torus, resolution)[centre - 1 : centre + 1, centre - 1 : centre + 1].any()


@pytest.mark.parametrize(("points", "named"), [(torch.zeros(0, 3), r"shape \(0, 3\)"), (torch.zeros(8, 2), r"shape \(8, 2\)"), (torch.zeros(8, 3), "enclose no volume")])
def test_points_that_enclose_nothing_are_named(points: torch.Tensor, named: str) -> None:
    """No points, points of the wrong shape, or points that close no surface: one clear error."""
    with pytest.raises(ValueError, match=named):
        occupancy_from_surface_points(points)


def test_a_gap_wider_than_the_first_shell_is_closed_by_a_wider_one() -> None:
    """A sphere's points with a hole where its top cap was (a sampled mug's open rim): the first
    shell leaves the gap open, a wider one closes it and the solid is still the sphere's."""
    generator = torch.Generator().manual_seed(0)
    points = torch.nn.functional.normalize(torch.randn(4096, 3, generator=generator), dim=-1) * 0.5
    points = points[points[:, 2] < 0.46]
    with pytest.raises(ValueError, match="shells 2 to 2 voxels"):
        occupancy_from_surface_points(points, 48, shell_voxels=2, max_shell_voxels=2)
    truth = np.linalg.norm(_grid_points(48), axis=-1) < 0.5
    assert _iou(occupancy_from_surface_points(points, 48, shell_voxels=2), truth) > 0.85
