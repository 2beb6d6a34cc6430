"""framework.export.texture_bake: xatlas unwrapping, back-projection baking, textured exports."""

from __future__ import annotations

import pytest
import torch
import trimesh

from bundled.evaluation.asset import MeshAsset, load_asset, render_asset
from bundled.evaluation.metrics import color_error, mask_iou
from bundled.world.render import WORLD_LIGHT
from framework.cameras.camera import CameraBatch
from framework.cameras.distribution import orbit_ring
from framework.export.texture_bake import bake_texture, unwrap_uv, write_textured_mesh
from framework.renderers.mesh_raster import MeshRasterizer, clip_positions
from framework.renderers.textured_mesh import two_sided_normals
from framework.representations.lights import CameraLight

SIDE_COLOURS = torch.tensor(
    [[0.9, 0.1, 0.1], [0.1, 0.8, 0.2], [0.1, 0.2, 0.9], [0.9, 0.8, 0.1], [0.8, 0.2, 0.8], [0.1, 0.8, 0.8]]
)
TEXTURE_SIZE = 128


def _cube() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A cube of side 1 (counter-clockwise outwards) and the side [F] each triangle lies on."""
    box = trimesh.creation.box()
    normals = torch.tensor(box.face_normals, dtype=torch.float32)
    axis = normals.abs().argmax(-1)
    side = 2 * axis + (normals.gather(1, axis[:, None])[:, 0] < 0).long()
    return torch.tensor(box.vertices, dtype=torch.float32), torch.tensor(box.faces, dtype=torch.long), side


def _views() -> CameraBatch:
    """Two rings that together see all six sides."""
    rings = [orbit_ring(6, elevation, 3.0, 40.0, 64, start_azimuth_deg=offset) for elevation, offset in ((35.0, 0.0), (-35.0, 30.0))]
    return CameraBatch(
        c2w=torch.cat([r.c2w for r in rings]),
        fovy_deg=torch.cat([r.fovy_deg for r in rings]),
        elevation_deg=torch.cat([r.elevation_deg for r in rings]),
        azimuth_deg=torch.cat([r.azimuth_deg for r in rings]),
        distance=torch.cat([r.distance for r in rings]),
        height=64,
        width=64,
    )


def _face_coloured(vertices: torch.Tensor, faces: torch.Tensor, side: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The cube with one vertex per triangle corner, so each side has a flat colour."""
    return vertices[faces].reshape(-1, 3), torch.arange(faces.numel()).view(-1, 3), SIDE_COLOURS[side].repeat_interleave(3, dim=0)


@pytest.fixture(scope="module")
def baked() -> dict[str, torch.Tensor]:
    vertices, faces, side = _cube()
    split_vertices, split_faces, colours = _face_coloured(vertices, faces, side)
    cameras = _views()
    render = MeshRasterizer("torch").render(split_vertices, split_faces, cameras, attributes=colours)
    images = render["attributes"] + (1 - render["opacity"])  # on white
    new_vertices, new_faces, uv, vmapping = unwrap_uv(vertices, faces, texture_size=TEXTURE_SIZE)
    texture, filled = bake_texture(new_vertices, new_faces, uv, cameras, images, render["opacity"][..., 0] > 0.5, texture_size=TEXTURE_SIZE)
    return {"vertices": new_vertices, "faces": new_faces, "uv": uv, "vmapping": vmapping, "texture": texture, "filled": filled, "side": side}


def test_unwrap_keeps_the_surface():
    mesh = trimesh.creation.icosphere(subdivisions=2)
    vertices = torch.as_tensor(mesh.vertices, dtype=torch.float32)
    faces = torch.as_tensor(mesh.faces, dtype=torch.long)
    new_vertices, new_faces, uv, vmapping = unwrap_uv(vertices, faces)
    assert new_faces.shape == faces.shape and new_vertices.shape[0] == uv.shape[0] == vmapping.shape[0] >= vertices.shape[0]
    assert torch.equal(vmapping[new_faces], faces)  # same triangles, same order
    assert torch.equal(new_vertices, vertices[vmapping])
    area = trimesh.Trimesh(new_vertices.numpy(), new_faces.numpy(), process=False).area
    assert area == pytest.approx(mesh.area, rel=1e-6)
    assert uv.min() >= 0 and uv.max() <= 1
    # Charts do not overlap: the UV triangles' areas add up to the area they cover.
    uv_triangles = uv[new_faces]
    edges = uv_triangles[:, 1:] - uv_triangles[:, :1]
    uv_area = (edges[:, 0, 0] * edges[:, 1, 1] - edges[:, 0, 1] * edges[:, 1, 0]).abs().sum() / 2
    uv_clip = torch.cat([uv * 2 - 1, torch.zeros_like(uv[:, :1]), torch.ones_like(uv[:, :1])], -1)[None]
    covered = (MeshRasterizer("torch").rasterize(uv_clip, new_faces, (256, 256))[..., 3] > 0).float().mean()
    assert covered == pytest.approx(float(uv_area), abs=0.02)


def test_baking_recovers_the_side_colours(baked):
    uv_clip = torch.cat([baked["uv"] * 2 - 1, torch.zeros_like(baked["uv"][:, :1]), torch.ones_like(baked["uv"][:, :1])], -1)[None]
    rast = MeshRasterizer("torch").rasterize(uv_clip, baked["faces"], (TEXTURE_SIZE, TEXTURE_SIZE))[0]
    texel_face = rast[..., 3].long() - 1
    on_surface = texel_face >= 0
    assert baked["filled"][on_surface].float().mean() > 0.99 and not baked["filled"][~on_surface].any()
    expected = SIDE_COLOURS[baked["side"][texel_face[on_surface]]]
    error = (baked["texture"][on_surface] - expected).abs().mean(-1)
    assert error.mean() < 0.02
    # Views blur colours across the cube's edges over about a pixel (0.034 here); away from them
    # every texel is right.
    points = MeshRasterizer("torch").interpolate(baked["vertices"], rast[None], baked["faces"])[0][on_surface]
    away_from_edges = points.abs().sort(dim=-1).values[:, 1] < 0.4
    assert away_from_edges.float().mean() > 0.5 and error[away_from_edges].max() < 0.02
    assert baked["texture"].shape == (TEXTURE_SIZE, TEXTURE_SIZE, 3)
    assert baked["texture"].min() >= 0 and baked["texture"].max() <= 1


def test_unfilled_texels_take_neighbouring_colours_not_background(baked):
    # Off the charts, every texel copies a seen one: no white (background) and no black (empty).
    texture = baked["texture"]
    assert (texture.sum(-1) > 0.3).all() and (texture.min(-1).values < 0.85).all()


def test_bake_rejects_views_that_see_nothing():
    vertices, faces, _ = _cube()
    new_vertices, new_faces, uv, _ = unwrap_uv(vertices, faces, texture_size=32)
    cameras = orbit_ring(1, 0.0, 3.0, 40.0, 16)
    with pytest.raises(ValueError, match="no texel is visible"):
        bake_texture(new_vertices, new_faces, uv, cameras, torch.ones(1, 16, 16, 3), torch.zeros(1, 16, 16), texture_size=32)
    with pytest.raises(ValueError, match="do not match 1 cameras of 16x16"):
        bake_texture(new_vertices, new_faces, uv, cameras, torch.ones(2, 16, 16, 3), texture_size=32)


@pytest.mark.parametrize("name", ["model.glb", "model.obj"])
def test_textured_exports_render_back_the_colours(tmp_path, baked, name):
    paths = write_textured_mesh(tmp_path, baked["vertices"], baked["faces"], baked["uv"], baked["texture"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.glb", "model.mtl", "model.obj", "model_albedo.png"]
    assert {key: path.name for key, path in paths.items()} == {
        "obj": "model.obj", "mtl": "model.mtl", "texture": "model_albedo.png", "glb": "model.glb"
    }
    assert "map_Kd model_albedo.png" in paths["mtl"].read_text()
    asset = load_asset(tmp_path / name)
    assert asset.texture is not None
    assert torch.allclose(asset.vertices, baked["vertices"], atol=1e-5)

    vertices, faces, side = _cube()
    split_vertices, split_faces, colours = _face_coloured(vertices, faces, side)
    cameras = orbit_ring(3, 25.0, 3.0, 40.0, 32, start_azimuth_deg=15.0)
    true_rgb, true_mask = render_asset(MeshAsset(split_vertices, split_faces, colours=colours), cameras)
    rgb, mask = render_asset(asset, cameras)
    assert (mask_iou(mask, true_mask) > 0.98).all()
    assert (color_error(rgb, true_rgb, mask, true_mask) < 0.03).all()


def test_textured_export_is_atomic(tmp_path, baked, monkeypatch):
    args = (baked["vertices"], baked["faces"], baked["uv"], baked["texture"])
    write_textured_mesh(tmp_path, *args)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def half_write_then_fail(self, file_obj, **kwargs):
        open(file_obj, "wb").write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(trimesh.Trimesh, "export", half_write_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        write_textured_mesh(tmp_path, *[a * 0.5 if a.is_floating_point() else a for a in args])
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(after) == sorted(before)  # no temporary or partial file left
    assert after["model.glb"] == before["model.glb"]


def _world_lit_sphere_views(albedo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, CameraBatch, torch.Tensor, torch.Tensor]:
    """A smooth sphere of one albedo rendered under the world's camera light from `_views`."""
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.6)
    vertices = torch.as_tensor(sphere.vertices, dtype=torch.float32)
    faces = torch.as_tensor(sphere.faces, dtype=torch.long)
    cameras = _views()
    rasterizer = MeshRasterizer("torch")
    rast = rasterizer.rasterize(clip_positions(vertices, cameras), faces, (cameras.height, cameras.width))
    covered = rast[..., 3] > 0
    normals = two_sided_normals(vertices, faces, rast, cameras, rasterizer)
    brightness = WORLD_LIGHT.brightness(normals, WORLD_LIGHT.directions(cameras)[:, None, None, :])
    lit = (albedo.expand(*covered.shape, 3) * brightness).clamp(0, 1)
    return vertices, faces, cameras, torch.where(covered[..., None], lit, torch.ones_like(lit)), covered


def test_delit_bake_recovers_the_albedo_of_views_under_the_world_light():
    albedo = torch.tensor([0.9, 0.8, 0.2])
    vertices, faces, cameras, images, masks = _world_lit_sphere_views(albedo)
    new_vertices, new_faces, uv, _ = unwrap_uv(vertices, faces, texture_size=64)
    delit, filled = bake_texture(new_vertices, new_faces, uv, cameras, images, masks, texture_size=64, light=CameraLight())
    plain, _ = bake_texture(new_vertices, new_faces, uv, cameras, images, masks, texture_size=64, light=None)
    assert filled.float().mean() > 0.3
    assert (delit[filled] - albedo).abs().mean() < 0.02
    # Without de-lighting the texture keeps the views' shading: darker than the albedo.
    assert (albedo - plain[filled]).mean() > 0.1
