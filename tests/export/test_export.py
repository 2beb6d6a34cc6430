"""framework.export: the z-up/+Y-up conversion, marching cubes, and GLB/OBJ round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import trimesh

from framework.export.axes import Z_UP_TO_Y_UP, yup_to_zup, zup_to_yup
from framework.export.marching_cubes import decimate, mesh_from_grid, remove_floaters, sample_grid
from framework.export.exporters import TexturedMeshFiles
from framework.export.mesh_io import Texture, load_mesh_zup, write_glb, write_obj
from framework.representations.lights import CameraLight
from framework.representations.textured_mesh import TexturedMesh

RADIUS = 0.5
RESOLUTION = 40
SPACING = 2.0 / (RESOLUTION - 1)


def sphere_density(points: torch.Tensor, centre: tuple[float, ...] = (0.0, 0.0, 0.0), radius: float = RADIUS) -> torch.Tensor:
    """[N] density, 1 at the centre, 0 on the sphere, negative outside."""
    return 1.0 - (points - torch.tensor(centre)).norm(dim=-1) / radius


@pytest.fixture(scope="module")
def sphere() -> tuple[np.ndarray, np.ndarray]:
    return mesh_from_grid(sample_grid(sphere_density, RESOLUTION), threshold=0.0)


@pytest.fixture
def coloured_mesh() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An asymmetric mesh (taller along z) so a wrong axis shows up."""
    base = trimesh.creation.icosphere(subdivisions=2)
    vertices = (base.vertices * [0.3, 0.5, 0.9] + [0.1, -0.2, 0.05]).astype(np.float32)
    colours = np.random.default_rng(0).random((len(vertices), 3))
    return vertices, base.faces.astype(np.int64), colours


# --- axes -----------------------------------------------------------------------------------


def test_axes_known_vectors():
    np.testing.assert_array_equal(zup_to_yup(np.array([0.0, 0.0, 1.0])), [0.0, 1.0, 0.0])  # up -> +Y
    np.testing.assert_array_equal(zup_to_yup(np.array([1.0, 0.0, 0.0])), [0.0, 0.0, 1.0])  # front -> +Z (glTF)
    np.testing.assert_array_equal(zup_to_yup(np.array([1.0, 2.0, 3.0])), [2.0, 3.0, 1.0])


def test_axes_proper_rotation_and_round_trip():
    np.testing.assert_allclose(Z_UP_TO_Y_UP @ Z_UP_TO_Y_UP.T, np.eye(3))
    assert np.linalg.det(Z_UP_TO_Y_UP) == pytest.approx(1.0)
    points = np.random.default_rng(0).normal(size=(5, 7, 3)).astype(np.float32)
    assert zup_to_yup(points).dtype == np.float32
    np.testing.assert_array_equal(yup_to_zup(zup_to_yup(points)), points)
    np.testing.assert_array_equal(zup_to_yup(yup_to_zup(points)), points)


def test_axes_map_normals_like_points(coloured_mesh):
    vertices, faces, _ = coloured_mesh
    zup = trimesh.Trimesh(vertices, faces, process=False)
    yup = trimesh.Trimesh(zup_to_yup(vertices), faces, process=False)
    np.testing.assert_allclose(yup.vertex_normals, zup_to_yup(zup.vertex_normals), atol=1e-6)
    assert yup.volume == pytest.approx(zup.volume)  # winding (outward faces) survives


# --- marching cubes -------------------------------------------------------------------------


def test_sphere_mesh_lies_on_the_sphere(sphere):
    vertices, faces = sphere
    assert vertices.dtype == np.float32 and faces.dtype == np.int64
    assert vertices.shape[1] == 3 and faces.shape[1] == 3
    radii = np.linalg.norm(vertices, axis=1)
    assert np.abs(radii - RADIUS).max() < 0.5 * SPACING


def test_sphere_mesh_is_closed_and_faces_outwards(sphere):
    mesh = trimesh.Trimesh(*sphere, process=False)
    assert mesh.is_watertight
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * RADIUS**3, rel=0.03)  # positive: outward
    assert (np.einsum("ij,ij->i", mesh.face_normals, mesh.triangles_center) > 0).all()


def test_chunking_does_not_change_the_mesh(sphere):
    vertices, faces = mesh_from_grid(sample_grid(sphere_density, RESOLUTION, chunk=4097), threshold=0.0)
    np.testing.assert_array_equal(vertices, sphere[0])
    np.testing.assert_array_equal(faces, sphere[1])


def test_surface_cut_by_the_box_still_closes():
    vertices, faces = mesh_from_grid(sample_grid(lambda p: sphere_density(p, radius=1.3), 16), threshold=0.0)
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    assert mesh.is_watertight and mesh.volume > 0
    assert np.abs(vertices).max() <= 1.0 + 2.0 / 15


def test_decimation_keeps_the_shape(sphere):
    vertices, faces = decimate(*sphere, target_faces=300)
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    assert 250 <= len(faces) <= 300 < len(sphere[1])
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * RADIUS**3, rel=0.06)
    assert decimate(*sphere, target_faces=10**9)[1].shape == sphere[1].shape
    with pytest.raises(ValueError, match="target_faces=2"):
        decimate(*sphere, target_faces=2)


@pytest.mark.parametrize("threshold", [1.5, -2.5])
def test_empty_level_set_names_threshold_and_range(threshold):
    with pytest.raises(ValueError, match=rf"threshold {threshold}.*\[-?\d"):
        mesh_from_grid(sample_grid(sphere_density, 8), threshold=threshold)


def test_remove_floaters_keeps_the_body():
    def body_and_speck(points):
        return torch.maximum(sphere_density(points), sphere_density(points, centre=(0.8, 0.0, 0.0), radius=0.1))

    vertices, faces = mesh_from_grid(sample_grid(body_and_speck, RESOLUTION), threshold=0.0)
    assert np.linalg.norm(vertices, axis=1).max() > 0.8  # the speck is there
    kept_vertices, kept_faces = remove_floaters(vertices, faces)
    assert np.linalg.norm(kept_vertices, axis=1).max() < RADIUS + SPACING
    assert kept_faces.max() < len(kept_vertices)
    assert trimesh.Trimesh(kept_vertices, kept_faces, process=False).is_watertight


# --- mesh files -----------------------------------------------------------------------------


@pytest.mark.parametrize("writer, name", [(write_glb, "model.glb"), (write_obj, "model.obj")])
def test_vertex_coloured_round_trip(tmp_path, coloured_mesh, writer, name):
    vertices, faces, colours = coloured_mesh
    writer(tmp_path / name, vertices, faces, vertex_colors=colours)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary files left

    raw = trimesh.load(tmp_path / name, force="mesh", process=False)
    np.testing.assert_allclose(raw.vertices, zup_to_yup(vertices), atol=1e-5)  # stored +Y up

    mesh = load_mesh_zup(tmp_path / name)
    np.testing.assert_allclose(mesh.vertices, vertices, atol=1e-5)
    np.testing.assert_array_equal(mesh.faces, faces)
    np.testing.assert_allclose(mesh.visual.vertex_colors[:, :3] / 255.0, colours, atol=1 / 255)
    assert mesh.volume > 0


def test_glb_has_matte_material_and_normals(tmp_path, coloured_mesh):
    vertices, faces, colours = coloured_mesh
    write_glb(tmp_path / "model.glb", vertices, faces, vertex_colors=colours)
    scene = trimesh.load(tmp_path / "model.glb", process=False)
    (geometry,) = scene.geometry.values()
    assert geometry.visual.material.metallicFactor == 0.0
    expected = zup_to_yup(trimesh.Trimesh(vertices, faces, process=False).vertex_normals)
    np.testing.assert_allclose(geometry.vertex_normals, expected, atol=1e-5)


def _glb_json(path) -> dict:
    """The JSON chunk of a binary glTF (12-byte header, then chunk length and type)."""
    data = path.read_bytes()
    length = int.from_bytes(data[12:16], "little")
    assert data[16:20] == b"JSON"
    return json.loads(data[20 : 20 + length])


@pytest.mark.parametrize("vertex_colours", [True, False], ids=["vertex-colours", "textured"])
def test_glb_marks_lit_colours_unlit_only_when_asked(tmp_path, coloured_mesh, vertex_colours):
    vertices, faces, colours = coloured_mesh
    content = {"vertex_colors": colours} if vertex_colours else {"texture": Texture(uv=np.zeros((len(vertices), 2)), image=np.zeros((2, 2, 3), np.uint8))}
    write_glb(tmp_path / "lit.glb", vertices, faces, **content)
    write_glb(tmp_path / "unlit.glb", vertices, faces, unlit=True, **content)
    lit, unlit = _glb_json(tmp_path / "lit.glb"), _glb_json(tmp_path / "unlit.glb")
    assert "KHR_materials_unlit" not in lit.get("extensionsUsed", [])
    assert not any("KHR_materials_unlit" in m.get("extensions", {}) for m in lit["materials"])
    assert "KHR_materials_unlit" in unlit["extensionsUsed"]
    assert unlit["materials"] and all("KHR_materials_unlit" in m["extensions"] for m in unlit["materials"])
    load_mesh_zup(tmp_path / "unlit.glb")  # still a file trimesh reads


@pytest.mark.parametrize("light", [None, CameraLight()], ids=["no-light", "camera-light"])
def test_textured_mesh_exporter_marks_the_glb_unlit_without_a_light(tmp_path, coloured_mesh, light):
    """The exporter asks the system for its representation by name; a texture made under no known
    light holds lit colours, so its GLB is marked unlit (what `light` replaced of the old
    world-light flag)."""
    vertices, faces, _ = coloured_mesh
    uv = torch.rand(len(vertices), 2, generator=torch.Generator().manual_seed(0))
    mesh = TexturedMesh(torch.as_tensor(vertices), torch.as_tensor(faces), uv, torch.rand(8, 8, 3))
    asked = []

    class System:
        def representation_named(self, name):
            asked.append(name)
            return mesh

    paths = TexturedMeshFiles(tmp_path, representation="textured", light=light)(System())
    assert asked == ["textured"]
    assert sorted(p.name for p in paths) == ["model.glb", "model.mtl", "model.obj", "model_albedo.png"]
    unlit = "KHR_materials_unlit" in _glb_json(tmp_path / "model.glb").get("extensionsUsed", [])
    assert unlit == (light is None)
    np.testing.assert_allclose(load_mesh_zup(tmp_path / "model.glb").vertices, vertices, atol=1e-5)


@pytest.mark.parametrize("writer, name", [(write_glb, "model.glb"), (write_obj, "model.obj")])
def test_textured_round_trip(tmp_path, coloured_mesh, writer, name):
    vertices, faces, _ = coloured_mesh
    rng = np.random.default_rng(1)
    texture = Texture(uv=rng.random((len(vertices), 2)), image=rng.integers(0, 256, (8, 16, 3), dtype=np.uint8))
    writer(tmp_path / name, vertices, faces, texture=texture)
    expected_files = ["model.glb"] if name.endswith("glb") else ["model.mtl", "model.obj", "model.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == expected_files

    mesh = load_mesh_zup(tmp_path / name)
    np.testing.assert_allclose(mesh.vertices, vertices, atol=1e-5)
    np.testing.assert_array_equal(mesh.faces, faces)
    np.testing.assert_allclose(mesh.visual.uv, texture.uv, atol=1e-6)
    material = mesh.visual.material
    image = material.image if isinstance(material, trimesh.visual.material.SimpleMaterial) else material.baseColorTexture
    np.testing.assert_array_equal(np.asarray(image.convert("RGB")), texture.image)


def test_obj_material_does_not_tint_the_texture(tmp_path, coloured_mesh):
    vertices, faces, _ = coloured_mesh
    texture = Texture(uv=np.zeros((len(vertices), 2)), image=np.zeros((2, 2, 3), dtype=np.uint8))
    write_obj(tmp_path / "model.obj", vertices, faces, texture=texture)
    assert (tmp_path / "model.obj").read_text().count("mtllib model.mtl") == 1
    mtl = (tmp_path / "model.mtl").read_text()
    assert "Kd 1.00000000 1.00000000 1.00000000" in mtl and "map_Kd model.png" in mtl


def test_colours_and_texture_are_exclusive(tmp_path, coloured_mesh):
    vertices, faces, colours = coloured_mesh
    texture = Texture(uv=np.zeros((len(vertices), 2)), image=np.zeros((2, 2, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="not both"):
        write_glb(tmp_path / "model.glb", vertices, faces, vertex_colors=colours, texture=texture)


def test_failed_write_keeps_the_old_file(tmp_path, coloured_mesh, monkeypatch):
    vertices, faces, colours = coloured_mesh
    target = tmp_path / "model.glb"
    target.write_bytes(b"previous export")

    def half_write_then_fail(self, file_obj, **kwargs):
        open(file_obj, "wb").write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(trimesh.Trimesh, "export", half_write_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        write_glb(target, vertices, faces, vertex_colors=colours)
    assert target.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.glb"]
