"""framework.export.pbr_bake and the PBR writers of mesh_io: a material field baked into UV maps,
written as a glTF metallic-roughness GLB and an OBJ bundle, and the exporter that does both."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from framework.export import mesh_io
from framework.export.axes import yup_to_zup
from framework.export.exporters import PBRMeshFiles
from framework.export.mesh_io import PBRTextures, Texture, load_mesh_zup, write_glb
from framework.export.pbr_bake import bake_field_textures, write_pbr_mesh

TEXTURE_SIZE = 256
PBR_FILES = ["model.glb", "model.mtl", "model.obj", "model_basecolor.png", "model_metallic.png", "model_roughness.png"]


def field_textures(points: torch.Tensor) -> dict[str, torch.Tensor]:
    """A stand-in for `PBRMaterial.textures`: every map varies along its own world axis."""
    return {
        "albedo": ((points + 1) / 2).clamp(0.0, 1.0),
        "roughness": 0.2 + 0.6 * (points[:, 2:] + 1) / 2,
        "metallic": (points[:, 1:2] > 0).float(),
    }


def _sphere() -> tuple[torch.Tensor, torch.Tensor]:
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=0.8)
    return torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces, dtype=torch.long)


@pytest.fixture(scope="module")
def baked() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    return bake_field_textures(*_sphere(), field_textures, texture_size=TEXTURE_SIZE)


@pytest.fixture(scope="module")
def exported(baked, tmp_path_factory) -> dict[str, Path]:
    return write_pbr_mesh(tmp_path_factory.mktemp("pbr"), *baked)


def _surface_samples(vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray, count: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """Uniform random points [N, 3] in random faces, and their interpolated UVs [N, 2]."""
    rng = np.random.default_rng(0)
    face = rng.integers(len(faces), size=count)
    r1, r2 = np.sqrt(rng.random(count)), rng.random(count)
    bary = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], axis=-1)[..., None]
    return (bary * vertices[faces[face]]).sum(1), (bary * uv[faces[face]]).sum(1)


def _lookup(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """[N, C] values in [0, 1] of the texels under `uv` (origin bottom-left, row 0 at the top) of
    an 8-bit or float image."""
    image = image / 255.0 if image.dtype == np.uint8 else image.astype(np.float64)
    image = image.reshape(*image.shape[:2], -1)
    height, width = image.shape[:2]
    rows = np.clip(((1 - uv[:, 1]) * height).astype(int), 0, height - 1)
    cols = np.clip((uv[:, 0] * width).astype(int), 0, width - 1)
    return image[rows, cols]


def _expected(points: np.ndarray) -> dict[str, np.ndarray]:
    return {name: value.numpy() for name, value in field_textures(torch.from_numpy(points).float()).items()}


def _glb_json(path: Path) -> dict:
    """The JSON chunk of a binary glTF (12-byte header, then chunk length and type)."""
    data = path.read_bytes()
    length = int.from_bytes(data[12:16], "little")
    assert data[16:20] == b"JSON"
    return json.loads(data[20 : 20 + length])


def test_baked_maps_hold_the_field_at_the_surface(baked):
    vertices, faces, uv, maps = baked
    assert {name: tuple(m.shape) for name, m in maps.items()} == {
        "base_color": (TEXTURE_SIZE, TEXTURE_SIZE, 3),
        "roughness": (TEXTURE_SIZE, TEXTURE_SIZE, 1),
        "metallic": (TEXTURE_SIZE, TEXTURE_SIZE, 1),
    }
    assert all(m.min() >= 0 and m.max() <= 1 for m in maps.values())
    points, point_uv = _surface_samples(vertices.numpy(), faces.numpy(), uv.numpy())
    expected = _expected(points)
    assert np.abs(_lookup(maps["base_color"].numpy(), point_uv) - expected["albedo"]).mean() < 0.01
    assert np.abs(_lookup(maps["roughness"].numpy(), point_uv) - expected["roughness"]).mean() < 0.01
    # Metallic jumps at y = 0: only samples within a texel of it may disagree.
    assert (_lookup(maps["metallic"].numpy(), point_uv) == expected["metallic"]).mean() > 0.98


def test_empty_atlas_space_takes_neighbouring_values_not_zero(baked):
    # Off the charts every texel copies a baked one; the field's albedo is never black here.
    assert (baked[3]["base_color"].sum(-1) > 0.2).all()
    assert (baked[3]["roughness"] >= 0.2 - 1e-6).all()


def test_bake_keeps_the_surface(baked):
    vertices, faces = _sphere()
    new_vertices, new_faces, uv, _ = baked
    assert new_faces.shape == faces.shape and uv.shape == (new_vertices.shape[0], 2)
    area = trimesh.Trimesh(new_vertices.numpy(), new_faces.numpy(), process=False).area
    assert area == pytest.approx(trimesh.Trimesh(vertices.numpy(), faces.numpy(), process=False).area, rel=1e-6)


def test_bake_evaluates_the_field_in_chunks_and_names_missing_maps():
    vertices, faces = _sphere()
    sizes = []

    def recording(points: torch.Tensor) -> dict[str, torch.Tensor]:
        sizes.append(points.shape[0])
        return field_textures(points)

    _, _, _, chunked = bake_field_textures(vertices, faces, recording, texture_size=32, chunk_size=100)
    assert len(sizes) > 1 and max(sizes) == 100
    _, _, _, whole = bake_field_textures(vertices, faces, field_textures, texture_size=32)
    assert all(torch.equal(chunked[name], whole[name]) for name in whole)
    with pytest.raises(ValueError, match=r"no \['metallic'\]"):
        bake_field_textures(vertices, faces, lambda p: {k: v for k, v in field_textures(p).items() if k != "metallic"}, texture_size=32)
    with pytest.raises(ValueError, match=r"faces \[F > 0, 3\], got shape \(0, 3\)"):
        bake_field_textures(vertices, faces[:0], field_textures, texture_size=32)


def test_export_writes_the_glb_and_obj_bundle(exported):
    assert sorted(p.name for p in exported["glb"].parent.iterdir()) == PBR_FILES
    assert {key: path.name for key, path in exported.items()} == {
        "glb": "model.glb",
        "obj": "model.obj",
        "mtl": "model.mtl",
        "base_color": "model_basecolor.png",
        "roughness": "model_roughness.png",
        "metallic": "model_metallic.png",
    }


def test_glb_material_is_metallic_roughness(exported):
    tree = _glb_json(exported["glb"])
    (material,) = tree["materials"]
    pbr = material["pbrMetallicRoughness"]
    assert pbr["metallicFactor"] == 1.0 and pbr["roughnessFactor"] == 1.0
    assert pbr["baseColorTexture"]["index"] != pbr["metallicRoughnessTexture"]["index"]
    assert "normalTexture" not in material
    assert {"KHR_materials_unlit"}.isdisjoint(tree.get("extensionsUsed", []))
    assert all(p["material"] == 0 for mesh in tree["meshes"] for p in mesh["primitives"])
    assert len(tree["images"]) == 2


def test_glb_maps_read_back_as_the_field(exported, baked):
    mesh = trimesh.load(exported["glb"], force="mesh", process=False)
    material = mesh.visual.material
    assert isinstance(material, trimesh.visual.material.PBRMaterial)
    assert material.baseColorTexture is not None and material.metallicRoughnessTexture is not None
    base_color, packed = np.asarray(material.baseColorTexture), np.asarray(material.metallicRoughnessTexture)
    assert base_color.shape[:2] == packed.shape[:2] == (TEXTURE_SIZE, TEXTURE_SIZE)

    vertices = yup_to_zup(np.asarray(mesh.vertices))
    np.testing.assert_allclose(vertices, baked[0].numpy(), atol=1e-6)  # +Y up in the file
    points, point_uv = _surface_samples(vertices, np.asarray(mesh.faces), np.asarray(mesh.visual.uv))
    expected = _expected(points)
    assert np.abs(_lookup(base_color[..., :3], point_uv) - expected["albedo"]).mean() < 0.03
    roughness_metallic = _lookup(packed[..., :3], point_uv)
    assert np.abs(roughness_metallic[:, 1:2] - expected["roughness"]).mean() < 0.03  # G
    assert np.abs(roughness_metallic[:, 2:3] - expected["metallic"]).mean() < 0.03  # B


def test_obj_bundle_names_every_map(exported, baked):
    mtl = exported["mtl"].read_text().splitlines()
    assert "newmtl model" in mtl
    for statement, key in (("map_Kd", "base_color"), ("map_Pr", "roughness"), ("map_Pm", "metallic")):
        assert f"{statement} {exported[key].name}" in mtl
        assert exported[key].is_file()
    assert not any(line.startswith("norm") for line in mtl)
    obj = exported["obj"].read_text()
    assert "mtllib model.mtl" in obj and "usemtl model" in obj
    mesh = load_mesh_zup(exported["obj"])
    np.testing.assert_allclose(mesh.vertices, baked[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(mesh.visual.uv, baked[2].numpy(), atol=1e-6)
    expected = (baked[3]["roughness"][..., 0] * 255).round().to(torch.uint8).numpy()
    with Image.open(exported["roughness"]) as image:
        np.testing.assert_array_equal(np.asarray(image), expected)


def test_normal_map_goes_into_both_formats(tmp_path, baked):
    vertices, faces, uv, maps = baked
    normal = torch.zeros(TEXTURE_SIZE, TEXTURE_SIZE, 3)
    normal[..., 2] = 1.0
    normal[..., :2] = 0.5
    paths = write_pbr_mesh(tmp_path, vertices, faces, uv, {**maps, "normal": normal})
    assert paths["normal"].name == "model_normal.png" and paths["normal"].is_file()
    assert "norm model_normal.png" in paths["mtl"].read_text().splitlines()
    (material,) = _glb_json(paths["glb"])["materials"]
    assert "normalTexture" in material
    loaded = trimesh.load(paths["glb"], force="mesh", process=False).visual.material
    np.testing.assert_array_equal(np.asarray(loaded.normalTexture)[0, 0, :3], [128, 128, 255])


def test_obj_bundle_writes_images_then_mtl_then_obj(tmp_path, baked, monkeypatch):
    order = []
    real = mesh_io.atomic_path

    def recording(target):
        order.append(Path(target).name)
        return real(target)

    monkeypatch.setattr(mesh_io, "atomic_path", recording)
    write_pbr_mesh(tmp_path, *baked)
    obj_order = order[: order.index("model.obj") + 1]
    assert sorted(obj_order[:3]) == ["model_basecolor.png", "model_metallic.png", "model_roughness.png"]
    assert obj_order[3:] == ["model.mtl", "model.obj"]


def test_pbr_maps_must_share_a_size_and_exclude_other_colourings(tmp_path):
    uv = np.zeros((3, 2))
    square = np.zeros((4, 4), np.uint8)
    with pytest.raises(ValueError, match="metallic is 2x4, base_color 4x4"):
        PBRTextures(uv=uv, base_color=np.zeros((4, 4, 3), np.uint8), roughness=square, metallic=square[:2])
    textures = PBRTextures(uv=uv, base_color=np.zeros((4, 4, 3), np.uint8), roughness=square, metallic=square)
    colour = Texture(uv=uv, image=np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="not both texture and pbr"):
        write_glb(tmp_path / "model.glb", np.eye(3), np.array([[0, 1, 2]]), texture=colour, pbr=textures)


def test_exporter_bakes_the_named_surface_and_material(tmp_path):
    vertices, faces = _sphere()
    surface = SimpleNamespace(surface=lambda: (vertices.clone().requires_grad_(), faces))
    system = SimpleNamespace(
        representation_named={"dmtet": surface}.__getitem__,
        materials={"appearance": SimpleNamespace(textures=field_textures)},
    )
    paths = PBRMeshFiles(tmp_path, representation="dmtet", material="appearance", texture_size=64)(system)
    assert sorted(p.name for p in paths) == PBR_FILES
    assert all(p.is_file() for p in paths)
    material = trimesh.load(tmp_path / "model.glb", force="mesh", process=False).visual.material
    assert np.asarray(material.metallicRoughnessTexture).shape[:2] == (64, 64)


def test_exporter_drops_flakes_beside_the_surface(tmp_path):
    """A DMTet under SDS leaves flakes of a few triangles; the export keeps the surface only."""
    vertices, faces = _sphere()
    flake = trimesh.creation.icosphere(subdivisions=0, radius=0.05)
    flake_vertices = torch.tensor(flake.vertices + [1.5, 0.0, 0.0], dtype=torch.float32)
    both = (torch.cat([vertices, flake_vertices]), torch.cat([faces, torch.tensor(flake.faces) + len(vertices)]))
    system = SimpleNamespace(representation_named={"main": SimpleNamespace(surface=lambda: both)}.__getitem__, materials={"main": SimpleNamespace(textures=field_textures)})
    PBRMeshFiles(tmp_path, texture_size=64)(system)
    mesh = load_mesh_zup(tmp_path / "model.glb")
    assert mesh.vertices[:, 0].max() < 0.81
    assert mesh.area == pytest.approx(trimesh.Trimesh(vertices.numpy(), faces.numpy()).area, rel=1e-4)
    PBRMeshFiles(tmp_path / "all", texture_size=64, min_component_fraction=0.0)(system)
    assert load_mesh_zup(tmp_path / "all" / "model.glb").vertices[:, 0].max() > 1.5
