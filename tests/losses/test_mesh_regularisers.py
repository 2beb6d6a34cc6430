"""framework.losses.mesh_regularisers: analytic values on small meshes, flat versus bumpy surfaces,
finite gradients, and the SDF sign entropy on single edges and on a tet grid."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import trimesh

from framework.losses.mesh_regularisers import initial_shape_hold, laplacian_smoothness, normal_consistency, sdf_sign_entropy
from framework.representations.tetrahedral_grid import cube_tetrahedra, tet_edges


def regular_tetrahedron(radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A closed regular tetrahedron, corners at `radius` from the origin, faces wound outward."""
    vertices = torch.tensor(
        [[1.0, 1.0, 1.0], [1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]], dtype=torch.float64
    )
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]])
    return vertices * radius / math.sqrt(3.0), faces


def planar_grid(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """An n x n triangulated grid with jittered vertices, lying in a tilted plane."""
    u, v = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    uv = torch.stack([u, v], dim=-1).reshape(-1, 2) + 0.3 * torch.rand(
        n * n, 2, generator=generator, dtype=torch.float64
    )
    basis = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64)).Q[:, :2]
    index = torch.arange(n * n).reshape(n, n)
    a, b, c, d = index[:-1, :-1], index[1:, :-1], index[1:, 1:], index[:-1, 1:]
    faces = torch.cat([torch.stack([a, b, c], -1).reshape(-1, 3), torch.stack([a, c, d], -1).reshape(-1, 3)])
    return uv @ basis.T + 0.5, faces


def spheres(noise: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An icosphere (radius 0.6), the same with radial noise of relative size `noise`, and its faces."""
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.6)
    smooth = torch.tensor(mesh.vertices, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    bumpy = smooth * (1.0 + noise * torch.randn(len(smooth), 1, generator=generator, dtype=torch.float64))
    return smooth, bumpy, torch.tensor(mesh.faces, dtype=torch.long)


def test_laplacian_of_a_regular_tetrahedron() -> None:
    """Each corner's neighbours are the other three: L = v - (4c - v) / 3 = 4 / 3 (v - c)."""
    radius = 0.7
    vertices, faces = regular_tetrahedron(radius)
    expected = (4.0 / 3.0 * radius) ** 2
    assert laplacian_smoothness(vertices, faces).item() == pytest.approx(expected, rel=1e-12)
    shift = torch.tensor([0.3, -2.0, 1.0], dtype=torch.float64)
    assert laplacian_smoothness(vertices + shift, faces).item() == pytest.approx(expected, rel=1e-12)


def test_laplacian_ignores_vertices_without_faces() -> None:
    vertices, faces = regular_tetrahedron(1.0)
    padded = torch.cat([vertices, torch.full((2, 3), 5.0, dtype=torch.float64)])
    assert laplacian_smoothness(padded, faces).item() == pytest.approx(laplacian_smoothness(vertices, faces).item())


def test_normal_consistency_of_a_tetrahedron_a_fold_and_a_plane() -> None:
    """A regular tetrahedron's faces meet at cos = -1/3; a right-angle fold at cos = 0; a plane at 1."""
    assert normal_consistency(*regular_tetrahedron(1.0)).item() == pytest.approx(4.0 / 3.0, rel=1e-12)
    fold = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    assert normal_consistency(fold, torch.tensor([[0, 1, 2], [0, 3, 1]])).item() == pytest.approx(1.0, rel=1e-12)
    vertices, faces = planar_grid(6, torch.Generator().manual_seed(0))
    assert normal_consistency(vertices, faces).item() == pytest.approx(0.0, abs=1e-12)


def test_normal_consistency_without_interior_edges_is_a_differentiable_zero() -> None:
    vertices = torch.eye(3, dtype=torch.float64, requires_grad=True)
    loss = normal_consistency(vertices, torch.tensor([[0, 1, 2]]))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(vertices.grad, torch.zeros(3, 3, dtype=torch.float64))


@pytest.mark.parametrize("regulariser", [laplacian_smoothness, normal_consistency])
def test_bumpy_sphere_costs_more_and_gradients_are_finite(
    regulariser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> None:
    smooth, bumpy, faces = spheres(noise=0.05)
    bumpy.requires_grad_(True)
    loss = regulariser(bumpy, faces)
    loss.backward()
    assert loss.item() > 2.0 * regulariser(smooth, faces).item()
    assert torch.isfinite(bumpy.grad).all() and bumpy.grad.abs().sum() > 0
    with torch.no_grad():  # a small step down the gradient smooths the sphere
        assert regulariser(bumpy - 1e-3 * bumpy.grad / bumpy.grad.norm(), faces) < loss


def test_mesh_regularisers_reject_a_mesh_without_faces() -> None:
    with pytest.raises(ValueError, match=r"faces must be \[F, 3\] with F >= 1, got \(0, 3\)"):
        laplacian_smoothness(torch.zeros(3, 3), torch.zeros(0, 3, dtype=torch.long))


def test_sign_entropy_of_one_crossed_edge() -> None:
    """BCE(-1 -> outside) + BCE(2 -> inside) = log(1 + e) + log(1 + e^2); uncrossed edges add nothing."""
    sdf = torch.tensor([-1.0, 2.0, 3.0, -4.0], dtype=torch.float64)
    expected = math.log(1 + math.e) + math.log(1 + math.e**2)
    assert sdf_sign_entropy(sdf, torch.tensor([[0, 1]])).item() == pytest.approx(expected, rel=1e-12)
    assert sdf_sign_entropy(sdf, torch.tensor([[0, 1], [1, 2], [0, 3]])).item() == pytest.approx(expected, rel=1e-12)


def test_sign_entropy_counts_zero_as_outside() -> None:
    """(-1, 0) crosses the surface, (0, 1) does not."""
    sdf = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    assert sdf_sign_entropy(sdf, torch.tensor([[0, 1]])).item() == pytest.approx(math.log(1 + math.e) + math.log(2.0))
    assert sdf_sign_entropy(sdf, torch.tensor([[1, 2]])).item() == 0.0


def test_sign_entropy_without_crossings_is_a_differentiable_zero() -> None:
    sdf = torch.tensor([1.0, 2.0, 0.5], requires_grad=True)
    loss = sdf_sign_entropy(sdf, torch.tensor([[0, 1], [1, 2]]))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(sdf.grad, torch.zeros(3))


def test_sign_entropy_on_a_grid_shrinks_the_sdf_at_the_surface() -> None:
    """A sharper SDF (larger magnitudes at the crossings) costs more; the gradient only touches the
    crossed edges' ends and a step down it shrinks their magnitudes, without flipping a sign."""
    vertices, tets = cube_tetrahedra(8)
    edges = tet_edges(tets)
    sdf = (vertices.norm(dim=1) - 0.6).double().requires_grad_(True)
    loss = sdf_sign_entropy(sdf, edges)
    loss.backward()
    assert sdf_sign_entropy(3.0 * sdf.detach(), edges) > loss > sdf_sign_entropy(0.3 * sdf.detach(), edges)
    crossed = (sdf[edges[:, 0]] < 0) != (sdf[edges[:, 1]] < 0)
    at_surface = torch.zeros(len(sdf), dtype=torch.bool)
    at_surface[edges[crossed].reshape(-1)] = True
    assert torch.isfinite(sdf.grad).all()
    assert (sdf.grad[~at_surface] == 0).all() and (sdf.grad[at_surface] != 0).all()
    stepped = sdf.detach() - 0.01 * sdf.grad
    assert (stepped[at_surface].abs() < sdf.detach()[at_surface].abs()).all()
    assert torch.equal(stepped < 0, sdf.detach() < 0)


def test_initial_shape_hold_is_free_near_the_start_and_pulls_back_beyond_the_margin() -> None:
    initial = torch.tensor([-0.30, -0.02, 0.02, 0.30])
    unchanged = initial.clone().requires_grad_()
    assert initial_shape_hold(unchanged, initial, margin=0.05).item() == 0.0
    near_flipped = torch.tensor([-0.30, 0.02, -0.02, 0.30])  # only vertices within the margin crossed
    assert initial_shape_hold(near_flipped, initial, margin=0.05).item() == 0.0
    far_flipped = torch.tensor([0.10, -0.02, 0.02, -0.20], requires_grad=True)  # the deep vertices crossed
    value = initial_shape_hold(far_flipped, initial, margin=0.05)
    torch.testing.assert_close(value, torch.tensor((0.10 + 0.20) / 4))
    value.backward()
    # Descending the gradient sends each crossed vertex back towards its starting side.
    assert far_flipped.grad[0] > 0 and far_flipped.grad[3] < 0 and far_flipped.grad[1:3].abs().sum() == 0


def test_initial_shape_hold_refuses_mismatched_shapes_and_a_negative_margin() -> None:
    with pytest.raises(ValueError, match=r"\[V\], got \(3,\) and \(4,\)"):
        initial_shape_hold(torch.zeros(3), torch.zeros(4), margin=0.05)
    with pytest.raises(ValueError, match="margin=-0.1"):
        initial_shape_hold(torch.zeros(3), torch.zeros(3), margin=-0.1)
