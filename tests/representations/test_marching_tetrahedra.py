"""framework.representations.tetrahedral_grid and .marching_tetrahedra: the Kuhn grid (counts,
orientation, conformity), the extracted surface of analytic SDFs (area, volume, watertightness,
winding), every sign pattern of one tet, gradients against finite differences, and the errors."""

from __future__ import annotations

import math

import pytest
import torch
import trimesh

from framework.representations.marching_tetrahedra import marching_tetrahedra
from framework.representations.tetrahedral_grid import cube_tetrahedra, tet_edges


def signed_volumes(vertices: torch.Tensor, tets: torch.Tensor) -> torch.Tensor:
    """[T] det(v1 - v0, v2 - v0, v3 - v0) / 6, in float64."""
    corners = vertices.double()[tets]
    return torch.linalg.det(corners[:, 1:] - corners[:, :1]) / 6.0


def enclosed_volume(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Volume enclosed by a closed mesh (divergence theorem); positive when wound outward."""
    v0, v1, v2 = vertices[faces].unbind(dim=1)
    return (v0 * torch.linalg.cross(v1, v2)).sum() / 6.0


def face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """[F, 3] unnormalised normals (v1 - v0) x (v2 - v0)."""
    v0, v1, v2 = vertices[faces].unbind(dim=1)
    return torch.linalg.cross(v1 - v0, v2 - v0)


def test_grid_counts_and_positive_volumes() -> None:
    resolution, scale = 3, 0.7
    vertices, tets = cube_tetrahedra(resolution, scale)
    assert vertices.shape == ((resolution + 1) ** 3, 3) and vertices.dtype == torch.float32
    assert tets.shape == (6 * resolution**3, 4) and tets.dtype == torch.int64
    assert torch.allclose(vertices.min(dim=0).values, torch.full((3,), -scale))
    assert torch.allclose(vertices.max(dim=0).values, torch.full((3,), scale))
    assert len(torch.unique(vertices, dim=0)) == len(vertices)
    assert len(torch.unique(tets.sort(dim=1).values, dim=0)) == len(tets)
    volumes = signed_volumes(vertices, tets)
    assert (volumes > 0).all()
    assert volumes.sum().item() == pytest.approx((2 * scale) ** 3, rel=1e-5)


def test_grid_is_conforming() -> None:
    """Each triangle is the face of 2 tets, or of 1 when it lies on the cube's boundary."""
    resolution, scale = 3, 1.0
    vertices, tets = cube_tetrahedra(resolution, scale)
    faces = tets[:, [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]].reshape(-1, 3).sort(dim=1).values
    unique_faces, counts = torch.unique(faces, dim=0, return_counts=True)
    on_boundary = ((vertices[unique_faces].abs() == scale).all(dim=1)).any(dim=1)
    assert set(counts.tolist()) == {1, 2}
    assert torch.equal(counts == 1, on_boundary)
    assert int(on_boundary.sum()) == 6 * 2 * resolution**2


def test_tet_edges_are_the_unique_kuhn_edges() -> None:
    resolution = 3
    vertices, tets = cube_tetrahedra(resolution)
    edges = tet_edges(tets)
    n = resolution + 1
    axis_edges, face_diagonals, body_diagonals = 3 * resolution * n**2, 3 * resolution**2 * n, resolution**3
    assert edges.shape == (axis_edges + face_diagonals + body_diagonals, 2)
    assert (edges[:, 0] < edges[:, 1]).all()
    keys = edges[:, 0] * len(vertices) + edges[:, 1]
    assert (keys[1:] > keys[:-1]).all()
    all_pairs = tets[:, [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]].reshape(-1, 2).sort(dim=1).values
    assert torch.isin(all_pairs[:, 0] * len(vertices) + all_pairs[:, 1], keys).all()


@pytest.mark.parametrize(
    ("resolution", "scale", "named"),
    [(0, 1.0, "resolution must be >= 1, got 0"), (2, -0.5, "scale must be > 0, got -0.5")],
)
def test_grid_rejects_bad_arguments(resolution: int, scale: float, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        cube_tetrahedra(resolution, scale)


def test_sphere_area_volume_and_watertight() -> None:
    radius = 0.6
    vertices, tets = cube_tetrahedra(64, 1.0)
    mesh_vertices, faces = marching_tetrahedra(vertices, tets, vertices.norm(dim=1) - radius)
    assert faces.dtype == torch.int64
    assert torch.equal(torch.unique(faces), torch.arange(len(mesh_vertices)))  # no unused vertex
    assert len(torch.unique(mesh_vertices, dim=0)) == len(mesh_vertices)  # no duplicate
    area = face_normals(mesh_vertices.double(), faces).norm(dim=1).sum().item() / 2
    volume = enclosed_volume(mesh_vertices.double(), faces).item()
    assert area == pytest.approx(4 * math.pi * radius**2, rel=0.02)
    assert volume == pytest.approx(4 / 3 * math.pi * radius**3, rel=0.02)
    mesh = trimesh.Trimesh(mesh_vertices.numpy(), faces.numpy(), process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume > 0


def test_plane_crossings_lie_on_the_plane_and_face_outside() -> None:
    """On a jittered grid a linear SDF's crossings are exact, and normals point to sdf > 0."""
    vertices, tets = cube_tetrahedra(5)
    generator = torch.Generator().manual_seed(0)
    vertices = vertices.double() + 0.04 * (torch.rand(vertices.shape, generator=generator, dtype=torch.float64) - 0.5)
    assert (signed_volumes(vertices, tets) > 0).all()
    normal = torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64)
    normal = normal / normal.norm()
    mesh_vertices, faces = marching_tetrahedra(vertices, tets, vertices @ normal - 0.1)
    assert torch.allclose(mesh_vertices @ normal, torch.full((len(mesh_vertices),), 0.1, dtype=torch.float64))
    normals = face_normals(mesh_vertices, faces)
    normals = normals / normals.norm(dim=1, keepdim=True)
    assert (normals @ normal > 0.999).all()


@pytest.mark.parametrize("pattern", range(1, 15))
def test_every_sign_pattern_of_one_tet(pattern: int) -> None:
    """1 triangle for 1 or 3 inside corners, 2 for 2; all wound towards the outside corners."""
    generator = torch.Generator().manual_seed(pattern)
    corners = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    if signed_volumes(corners, torch.tensor([[0, 1, 2, 3]])) < 0:
        corners = corners[[1, 0, 2, 3]]
    inside = torch.tensor([pattern >> c & 1 for c in range(4)], dtype=torch.bool)
    magnitudes = 0.1 + torch.rand(4, generator=generator, dtype=torch.float64)
    sdf = torch.where(inside, -magnitudes, magnitudes)
    mesh_vertices, faces = marching_tetrahedra(corners, torch.tensor([[0, 1, 2, 3]]), sdf)
    n_inside = int(inside.sum())
    assert len(faces) == (2 if n_inside == 2 else 1)
    assert len(mesh_vertices) == n_inside * (4 - n_inside)
    # the SDF's linear interpolant in the tet, sdf(x) = g . x + c: zero at the crossings, g points outside
    g_and_c = torch.linalg.solve(torch.cat([corners, torch.ones(4, 1, dtype=torch.float64)], dim=1), sdf)
    assert torch.allclose(mesh_vertices @ g_and_c[:3] + g_and_c[3], torch.zeros((), dtype=torch.float64), atol=1e-12)
    assert (face_normals(mesh_vertices, faces) @ g_and_c[:3] > 0).all()


def test_zero_counts_as_outside() -> None:
    """sdf == 0 is outside: one inside corner cuts the opposite face, whose corners carry the crossings."""
    corners = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    tets = torch.tensor([[0, 1, 2, 3]])
    mesh_vertices, faces = marching_tetrahedra(corners, tets, torch.tensor([-1.0, 0.0, 0.0, 0.0]))
    assert len(faces) == 1
    assert torch.equal(mesh_vertices[faces[0]].sort(dim=0).values, corners[1:].sort(dim=0).values)
    with pytest.raises(ValueError, match="empty"):
        marching_tetrahedra(corners, tets, torch.zeros(4))


def test_gradients_match_finite_differences() -> None:
    """The crossings (and the enclosed volume, through the faces) against central differences."""
    vertices, tets = cube_tetrahedra(4)
    generator = torch.Generator().manual_seed(0)
    vertices = vertices.double() + 0.05 * (torch.rand(vertices.shape, generator=generator, dtype=torch.float64) - 0.5)
    sdf = vertices.norm(dim=1) - 0.55 + 0.05 * torch.randn(len(vertices), generator=generator, dtype=torch.float64)
    sdf = torch.where(sdf < 0, sdf - 0.01, sdf + 0.01)  # |sdf| >= 0.01: no sign flips within eps
    vertices.requires_grad_(True)
    sdf.requires_grad_(True)

    def crossings_and_volume(vertices: torch.Tensor, sdf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mesh_vertices, faces = marching_tetrahedra(vertices, tets, sdf)
        return mesh_vertices, enclosed_volume(mesh_vertices, faces)

    assert torch.autograd.gradcheck(crossings_and_volume, (vertices, sdf), eps=1e-6, atol=1e-7, fast_mode=True)


@pytest.mark.parametrize(
    ("offset", "named"),
    [
        (-10.0, r"negative at all 125 grid vertices \(full grid\)"),
        (10.0, r"positive \(>= 0\) at all 125 grid vertices \(empty shape\)"),
    ],
)
def test_no_surface_raises(offset: float, named: str) -> None:
    vertices, tets = cube_tetrahedra(4)
    with pytest.raises(ValueError, match=named):
        marching_tetrahedra(vertices, tets, vertices.norm(dim=1) + offset)


def test_nan_sdf_raises() -> None:
    vertices, tets = cube_tetrahedra(2)
    sdf = vertices.norm(dim=1) - 0.5
    sdf[3] = float("nan")
    with pytest.raises(ValueError, match="1 NaN or infinite values"):
        marching_tetrahedra(vertices, tets, sdf)
