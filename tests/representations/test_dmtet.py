"""framework.representations.dmtet: the initial shapes (ellipsoid in both SDF modes, a user's GLB
placed in the grid), the deformation bound, gradients from the surface to the SDF's parameters,
and the one-line errors (init, init_path, checkpoint grid)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from framework.export.mesh_io import write_glb
from framework.representations.dmtet import DMTet, ellipsoid_sdf
from framework.representations.encodings import TriplaneEncoding

RADII = (0.3, 0.45, 0.6)


def _field_dmtet(resolution: int = 16, **kwargs) -> DMTet:
    torch.manual_seed(0)
    return DMTet(resolution=resolution, encoding=TriplaneEncoding(resolution=16, channels=4), hidden=32, **kwargs)


def _watertight(vertices: torch.Tensor, faces: torch.Tensor) -> trimesh.Trimesh:
    mesh = trimesh.Trimesh(vertices.detach().numpy(), faces.numpy(), process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    return mesh


@pytest.mark.parametrize("mode", ["field", "per-vertex"])
def test_ellipsoid_init_is_a_watertight_mesh_of_the_radii(mode: str) -> None:
    """The initial surface spans 2 * radius along each axis, to within a grid cell, and is closed
    and wound outward, whether a field was fitted to the SDF or the vertices hold it."""
    resolution = 16
    if mode == "field":
        dmtet = _field_dmtet(resolution, init_radii=RADII, init_fit_steps=150)
    else:
        dmtet = DMTet(resolution=resolution, encoding=None, init_radii=RADII)
    vertices, faces = dmtet.surface()
    mesh = _watertight(vertices, faces)
    cell = 2.0 / resolution
    np.testing.assert_allclose(mesh.extents, 2 * np.array(RADII), atol=cell)
    np.testing.assert_allclose(mesh.bounds.mean(axis=0), 0.0, atol=cell / 2)


def test_per_vertex_init_holds_the_ellipsoid_sdf_and_no_deformation() -> None:
    dmtet = DMTet(resolution=8, encoding=None, init_radii=RADII)
    torch.testing.assert_close(dmtet.vertex_sdf.detach(), ellipsoid_sdf(dmtet.grid, RADII))
    assert torch.equal(dmtet.vertex_deformation.detach(), torch.zeros_like(dmtet.grid))


@pytest.mark.parametrize("limit", [0.0, 0.25, 0.45])
def test_deformation_stays_within_its_limit_in_cells(limit: float) -> None:
    """However large the raw deformation, no vertex moves more than `deformation_limit` cells
    along an axis (so tets cannot invert), and a large one reaches the limit."""
    resolution, scale = 8, 0.8
    dmtet = DMTet(resolution=resolution, scale=scale, encoding=None, deformation_limit=limit, init_radii=(0.4,) * 3)
    with torch.no_grad():
        dmtet.vertex_deformation.copy_(100.0 * torch.randn(dmtet.grid.shape, generator=torch.Generator().manual_seed(0)))
    sdf, deformation = dmtet.sdf_and_deformation()
    offsets = (dmtet.deformed_grid(deformation) - dmtet.grid).abs()
    bound = limit * 2 * scale / resolution
    assert offsets.max() <= bound + 1e-6
    assert offsets.max() >= 0.99 * bound
    dmtet.surface()  # still meshes


def test_deformation_of_a_field_is_bounded_too() -> None:
    dmtet = _field_dmtet(8, init_radii=(0.5,) * 3, init_fit_steps=100)
    with torch.no_grad():
        dmtet.head[-1].bias[1:] = 50.0
    _, deformation = dmtet.sdf_and_deformation()
    offsets = (dmtet.deformed_grid(deformation) - dmtet.grid).abs()
    assert offsets.max() <= 0.25 * 2 / 8 + 1e-6 and offsets.max() > 0.2 * 2 / 8


def test_negative_deformation_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="deformation_limit=-0.1: must be >= 0"):
        DMTet(resolution=4, encoding=None, deformation_limit=-0.1, init="none")


def test_gradients_of_the_surface_reach_the_field_parameters() -> None:
    dmtet = _field_dmtet(8, init_radii=(0.5,) * 3, init_fit_steps=100)
    vertices, faces = dmtet.surface()
    vertices.norm(dim=-1).sum().backward()
    assert dmtet.encoding.planes.grad is not None and dmtet.encoding.planes.grad.abs().sum() > 0
    for name, parameter in dmtet.head.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_gradients_of_the_surface_reach_the_per_vertex_sdf_and_deformation() -> None:
    dmtet = DMTet(resolution=8, encoding=None, init_radii=(0.5,) * 3)
    vertices, faces = dmtet.surface()
    vertices.norm(dim=-1).sum().backward()
    # Only vertices of surface-crossing edges get a gradient, and they do.
    assert 0 < int((dmtet.vertex_sdf.grad != 0).sum()) < len(dmtet.grid)
    assert dmtet.vertex_deformation.grad.abs().sum() > 0


def _box_distance(points: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Signed distance of points to the axis-aligned box of half-extents `half` at the origin."""
    q = np.abs(points) - half
    return np.linalg.norm(np.maximum(q, 0.0), axis=-1) + np.minimum(q.max(axis=-1), 0.0)


def test_mesh_init_places_a_user_glb_in_the_grid(tmp_path: Path) -> None:
    """A box of any size and centre, saved as a GLB (+y up), is centred and scaled to the bounding
    sphere `init_mesh_radius`, keeps its z-up orientation, and the DMTet's surface follows it."""
    extents, centre, radius = np.array([1.0, 2.0, 0.5]), np.array([3.0, -1.0, 5.0]), 0.6
    box = trimesh.creation.box(extents=extents)
    write_glb(tmp_path / "box.glb", box.vertices + centre, box.faces)
    resolution = 16
    dmtet = DMTet(resolution=resolution, encoding=None, init="mesh", init_path=str(tmp_path / "box.glb"), init_mesh_radius=radius)
    vertices, faces = dmtet.surface()
    mesh = _watertight(vertices, faces)
    half = extents / 2 * radius / np.linalg.norm(extents / 2)
    cell = 2.0 / resolution
    np.testing.assert_allclose(mesh.extents, 2 * half, atol=cell)
    assert np.abs(_box_distance(mesh.vertices, half)).max() < cell


def test_shape_init_follows_a_signed_distance() -> None:
    """`init="shape"` (a point-cloud prior's solid in Fantasia3D) meshes the given signed distance:
    here a box, whose surface the mesh follows to within a grid cell."""
    half, resolution = np.array([0.5, 0.3, 0.4]), 16
    box = lambda points: torch.from_numpy(_box_distance(points.numpy(), half)).float()  # noqa: E731
    vertices, faces = DMTet(resolution=resolution, encoding=None, init="shape", init_shape=box).surface()
    mesh = _watertight(vertices, faces)
    cell = 2.0 / resolution
    np.testing.assert_allclose(mesh.extents, 2 * half, atol=cell)
    assert np.abs(_box_distance(mesh.vertices, half)).max() < cell


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"init": "sphere"}, r"DMTet init='sphere': must be one of \('ellipsoid', 'mesh', 'shape', 'none'\)"),
        ({"init": "mesh"}, r"DMTet init='mesh' needs init_path=<a mesh file>"),
        ({"init": "shape"}, r"DMTet init='shape' needs init_shape=<a signed distance>"),
        ({"init": "mesh", "init_path": "MISSING"}, r"DMTet init_path='.*missing.glb': no such file"),
        ({"init": "mesh", "init_path": "BROKEN"}, r"DMTet init_path='.*broken.glb': cannot read it as a mesh"),
    ],
    ids=["bad-init", "no-path", "no-shape", "missing-file", "unreadable-file"],
)
def test_bad_init_settings_fail_with_one_line(tmp_path: Path, kwargs: dict, message: str) -> None:
    (tmp_path / "broken.glb").write_bytes(b"glTF but not really")
    paths = {"MISSING": str(tmp_path / "missing.glb"), "BROKEN": str(tmp_path / "broken.glb")}
    if "init_path" in kwargs:
        kwargs = {**kwargs, "init_path": paths[kwargs["init_path"]]}
    with pytest.raises(ValueError, match=message) as refused:
        DMTet(resolution=4, encoding=None, **kwargs)
    assert "\n" not in str(refused.value)


def test_shape_state_round_trips_and_a_mismatch_names_both_grids() -> None:
    dmtet = DMTet(resolution=8, scale=1.0, encoding=None, init="none")
    assert dmtet.shape_state() == {"resolution": 8, "scale": 1.0}
    dmtet.load_shape_state(dmtet.shape_state())
    with pytest.raises(ValueError, match=r"resolution 16 and scale 1.0, this run's 8 and 1.0") as refused:
        dmtet.load_shape_state({"resolution": 16, "scale": 1.0})
    assert "representation.resolution" in str(refused.value) and "\n" not in str(refused.value)


def test_grid_buffers_stay_out_of_the_state_dict() -> None:
    """Checkpoints hold the SDF's parameters only; the grid is rebuilt from shape_state."""
    keys = set(DMTet(resolution=4, encoding=None, init="none").state_dict())
    assert keys == {"vertex_sdf", "vertex_deformation"}


def test_albedo_is_white_without_a_colour_module() -> None:
    points = torch.rand(5, 3)
    assert torch.equal(DMTet(resolution=4, encoding=None, init="none").albedo(points), torch.ones(5, 3))


def test_the_field_mlp_is_seeded_by_seed_not_by_the_global_rng() -> None:
    """A conversion builds its DMTet mid-run, where a resumed run's global RNG differs from an
    uninterrupted one's: the same seed gives the same MLP whatever the global state, and
    building one leaves the global RNG where it was."""
    encoding = TriplaneEncoding(resolution=8, channels=2)
    heads = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        before = torch.get_rng_state()
        heads.append(DMTet(resolution=4, encoding=copy.deepcopy(encoding), init="none", seed=3).head.state_dict())
        assert torch.equal(torch.get_rng_state(), before)
    for key in heads[0]:
        assert torch.equal(heads[0][key], heads[1][key]), key
    other = DMTet(resolution=4, encoding=copy.deepcopy(encoding), init="none", seed=4).head.state_dict()
    assert not torch.equal(other["0.weight"], heads[0]["0.weight"])
