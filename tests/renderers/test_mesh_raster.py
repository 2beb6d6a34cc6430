"""framework.renderers.mesh_raster: coverage, z-test, interpolation, texture sampling, silhouette
gradients, and parity with nvdiffrast where CUDA and nvdiffrast are present."""

from __future__ import annotations

import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F
import trimesh

from bundled.world.objects import OBJECTS
from bundled.world.render import object_mesh
from framework.cameras.camera import CameraBatch
from framework.cameras.distribution import orbit_ring
from framework.renderers.mesh_raster import MeshRasterizer, _find_plugin_after_build, _import_nvdiffrast, clip_positions

RES = 32
FOCAL = 32.0  # pixels: fovy = 2 atan(0.5) at 32 px
DISTANCE = 2.0
NEAR, FAR = 0.1, 100.0


@pytest.fixture
def rasterizer() -> MeshRasterizer:
    return MeshRasterizer(backend="torch")


def front_camera(batch: int = 1) -> CameraBatch:
    """Camera on +x looking at the origin: world +y is the image's right, +z its top; a unit of
    world length at the origin spans 16 pixels."""
    fovy = math.degrees(2 * math.atan(0.5 * RES / FOCAL))
    return CameraBatch.from_orbit(torch.zeros(batch), torch.zeros(batch), torch.full((batch,), DISTANCE), torch.full((batch,), fovy), RES)


def quad(left: float, right: float, bottom: float, top: float, x: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A rectangle in the plane at world `x`, facing the front camera, as two triangles."""
    vertices = torch.tensor([[x, left, bottom], [x, right, bottom], [x, right, top], [x, left, top]])
    return vertices, torch.tensor([[0, 1, 2], [0, 2, 3]])


def ndc_depth(depth: float) -> float:
    """z/w of a point at camera depth `depth` under `projection_opengl(NEAR, FAR)`."""
    return (FAR + NEAR) / (FAR - NEAR) - 2 * FAR * NEAR / ((FAR - NEAR) * depth)


# --- rasterize and interpolate ------------------------------------------------------------------


def test_front_facing_quad_covers_expected_pixels_with_analytic_values(rasterizer):
    # Edges at +-0.5 world units = +-8 pixels from the centre: pixel columns and rows 8..23.
    vertices, faces = quad(-0.5, 0.5, -0.5, 0.5)
    out = rasterizer.render(vertices, faces, front_camera(), attributes=vertices)
    expected = torch.zeros(RES, RES, dtype=torch.bool)
    expected[8:24, 8:24] = True
    assert torch.equal(out["rast"][0, ..., 3] > 0, expected)
    assert torch.allclose(out["opacity"][0, ..., 0], expected.float(), atol=1e-5)  # edges on pixel borders: no blending
    assert torch.allclose(out["depth"][0, expected], torch.full((256, 1), DISTANCE), atol=1e-5)
    assert (out["depth"][0, ~expected] == 0).all()
    assert torch.allclose(out["rast"][0, expected][:, 2], torch.full((256,), ndc_depth(DISTANCE)), atol=1e-6)
    # Pixel centre (row, col) sees world (0, (col + 0.5 - 16) / 16, -(row + 0.5 - 16) / 16).
    centres = (torch.arange(RES) + 0.5 - 16) / 16
    points = out["attributes"][0]
    assert torch.allclose(points[8:24, 8:24, 1], centres[8:24].expand(16, 16), atol=1e-5)
    assert torch.allclose(points[8:24, 8:24, 2], -centres[8:24, None].expand(16, 16), atol=1e-5)
    assert (points[~expected] == 0).all()


def test_pixel_convention_matches_rays(rasterizer):
    # A huge plane shifted right covers exactly the right half of the image.
    cameras = orbit_ring(1, 0.0, 3.0, 40.0, 8)
    vertices = torch.tensor([[0.0, -0.1, -5.0], [0.0, 5.0, 5.0], [0.0, -0.1, 5.0], [0.0, 5.0, -5.0]])
    faces = torch.tensor([[0, 1, 2], [0, 3, 1]])
    face_index = rasterizer.render(vertices, faces, cameras)["rast"][0, ..., 3] - 1
    assert (face_index[:, 4:] >= 0).all() and (face_index[:, :4] < 0).all()


def test_tilted_surface_is_perspective_correct(rasterizer):
    # A plane tilted towards the camera: interpolated points must lie on each pixel's ray.
    cameras = front_camera()
    vertices = torch.tensor([[-0.6, -0.7, -0.7], [0.6, 0.7, -0.7], [0.6, 0.7, 0.7], [-0.6, -0.7, 0.7]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    out = rasterizer.render(vertices, faces, cameras, attributes=vertices, antialias=False)
    covered = out["rast"][0, ..., 3] > 0
    assert covered.sum() > 300
    origins, directions = cameras.rays()
    offsets = out["attributes"][0][covered] - origins[0][covered]
    assert torch.linalg.cross(offsets, directions[0][covered], dim=-1).norm(dim=-1).max() < 1e-4
    # Depth is the OpenCV camera z of the visible point.
    w2c = cameras.world_to_camera_opencv()[0]
    camera_z = out["attributes"][0][covered] @ w2c[2, :3] + w2c[2, 3]
    assert torch.allclose(out["depth"][0, covered, 0], camera_z, atol=1e-5)


def test_points_land_on_a_curved_surface(rasterizer):
    mesh = object_mesh(OBJECTS["torus"], "blue", resolution=48)
    vertices = torch.as_tensor(mesh.vertices, dtype=torch.float32)
    faces = torch.as_tensor(mesh.faces, dtype=torch.long)
    out = rasterizer.render(vertices, faces, orbit_ring(2, 40.0, 2.8, 42.0, 48), attributes=vertices, antialias=False)
    covered = out["rast"][..., 3] > 0
    assert covered.any() and (~covered).any()
    u, v = out["rast"][..., 0][covered], out["rast"][..., 1][covered]
    assert (u >= -1e-5).all() and (v >= -1e-5).all() and (u + v <= 1 + 1e-5).all()
    distance, _ = OBJECTS["torus"].evaluate(out["attributes"][covered])
    assert distance.abs().max() < 0.03


def test_z_test_keeps_the_nearer_triangle_whatever_the_order(rasterizer):
    near_tri = torch.tensor([[0.5, -0.5, -0.5], [0.5, 0.5, -0.5], [0.5, 0.0, 0.5]])
    far_tri = torch.tensor([[-0.5, -1.5, -0.8], [-0.5, 1.5, -0.8], [-0.5, 0.0, 1.5]])
    vertices = torch.cat([far_tri, near_tri])
    for faces, near_id in ((torch.tensor([[0, 1, 2], [3, 4, 5]]), 2), (torch.tensor([[3, 4, 5], [0, 1, 2]]), 1)):
        rast = rasterizer.render(vertices, faces, front_camera(), antialias=False)["rast"][0]
        ids = rast[..., 3]
        assert set(ids.unique().tolist()) == {0.0, 1.0, 2.0}
        assert ids[16, 16] == near_id  # the image centre sees both; the nearer one wins
        assert rast[16, 16, 2] == pytest.approx(ndc_depth(DISTANCE - 0.5), abs=1e-6)
        far_only = (ids > 0) & (ids != near_id)
        assert torch.allclose(rast[far_only][:, 2], torch.full((int(far_only.sum()),), ndc_depth(DISTANCE + 0.5)), atol=1e-6)


def test_triangles_crossing_the_camera_plane_and_near_plane_are_clipped(rasterizer):
    # A floor under the camera reaching behind it: the visible part is what the rays hit.
    cameras = orbit_ring(1, 0.0, 2.0, 60.0, 24)
    vertices = torch.tensor([[-3.0, -3.0, -0.5], [8.0, -3.0, -0.5], [8.0, 3.0, -0.5], [-3.0, 3.0, -0.5]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    rast = rasterizer.render(vertices, faces, cameras, antialias=False)["rast"][0]
    origins, directions = cameras.rays()
    t = (-0.5 - origins[0, ..., 2]) / directions[0, ..., 2]
    hit = origins[0] + t[..., None] * directions[0]
    expected = (t > 0) & (hit[..., 0].abs() <= 8) & (hit[..., 1].abs() <= 3) & (hit[..., 0] >= -3)
    assert expected.sum() > 100 and (rast[..., 3] > 0).eq(expected).float().mean() > 0.99
    # A near plane beyond the floor's nearest points cuts the bottom rows away.
    close = MeshRasterizer("torch").rasterize(clip_positions(vertices, cameras, near=1.5), faces, (24, 24))[0]
    assert (close[..., 3] > 0).sum() < (rast[..., 3] > 0).sum()
    camera_depth = (hit - origins[0]) @ -cameras.c2w[0, :3, 2]
    assert (camera_depth[close[..., 3] > 0] >= 1.5 - 1e-4).all()


def test_rasterizer_is_independent_of_chunking_and_batching():
    mesh = trimesh.creation.icosphere(subdivisions=3)
    vertices = torch.as_tensor(mesh.vertices, dtype=torch.float32)
    faces = torch.as_tensor(mesh.faces, dtype=torch.long)
    cameras = orbit_ring(2, 10.0, 2.8, 42.0, 32)
    pos_clip = clip_positions(vertices, cameras)
    big = MeshRasterizer("torch").rasterize(pos_clip, faces, (32, 32))
    small = MeshRasterizer("torch", max_pairs=1).rasterize(pos_clip, faces, (32, 32))  # one face per chunk
    assert torch.equal(big, small)
    single = MeshRasterizer("torch").rasterize(pos_clip[1:], faces, (32, 32))
    assert torch.equal(big[1:], single)


def test_interpolate_gradients_reach_attributes_and_positions(rasterizer):
    vertices, faces = quad(-0.5, 0.4, -0.45, 0.5)
    attributes = torch.rand(4, 3, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    cameras = front_camera()

    def loss(positions: torch.Tensor) -> torch.Tensor:
        pos_clip = clip_positions(positions, cameras)
        rast = rasterizer.rasterize(pos_clip, faces, (RES, RES))
        return rasterizer.interpolate(attributes, rast, faces).square().sum()

    # Sliding a vertex along its camera ray keeps coverage but moves the perspective barycentrics.
    positions = vertices.clone().requires_grad_(True)
    loss(positions).backward()
    assert torch.isfinite(positions.grad).all() and torch.isfinite(attributes.grad).all()
    assert (attributes.grad.abs().sum(-1) > 0).all()
    ray = F.normalize(vertices[2] - cameras.position[0], dim=0)
    step = 0.05 * ray
    with torch.no_grad():
        moved = [vertices.clone(), vertices.clone()]
        moved[0][2] += step
        moved[1][2] -= step
        finite_difference = (loss(moved[0]) - loss(moved[1])) / 0.1
    analytic = positions.grad[2] @ ray
    assert analytic.abs() > 1.0
    assert analytic.item() == pytest.approx(finite_difference.item(), rel=0.02)


def test_bad_inputs_are_named(rasterizer):
    vertices, faces = quad(-0.5, 0.5, -0.5, 0.5)
    pos_clip = clip_positions(vertices, front_camera())
    with pytest.raises(ValueError, match=r"pos_clip must be \[B, V, 4\]"):
        rasterizer.rasterize(pos_clip[0], faces, (8, 8))
    with pytest.raises(ValueError, match="there are 4"):
        rasterizer.rasterize(pos_clip, torch.tensor([[0, 1, 7]]), (8, 8))
    with pytest.raises(ValueError, match="backend must be one of"):
        MeshRasterizer("opengl")
    with pytest.raises(ValueError, match="boundary_mode"):
        rasterizer.texture(torch.zeros(1, 2, 2, 1), torch.zeros(1, 1, 1, 2), boundary_mode="mirror")


@pytest.mark.skipif(torch.cuda.is_available() and _import_nvdiffrast() is not None, reason="CUDA and nvdiffrast are present")
def test_cuda_backend_without_cuda_or_nvdiffrast_is_a_value_error():
    with pytest.raises(ValueError, match="backend='cuda' needs CUDA and nvdiffrast"):
        MeshRasterizer("cuda")


# --- texture ------------------------------------------------------------------------------------


def test_bilinear_clamp_matches_grid_sample_and_wrap_repeats(rasterizer):
    generator = torch.Generator().manual_seed(0)
    tex = torch.rand(2, 5, 7, 3, generator=generator)
    uv = torch.rand(2, 6, 9, 2, generator=generator) * 1.6 - 0.3  # reaches past the borders
    clamped = rasterizer.texture(tex, uv, boundary_mode="clamp")
    reference = F.grid_sample(tex.permute(0, 3, 1, 2), uv * 2 - 1, mode="bilinear", padding_mode="border", align_corners=False)
    assert torch.allclose(clamped, reference.permute(0, 2, 3, 1), atol=1e-5)
    # Wrapping equals sampling a 3x3 tiling of the texture around its middle tile.
    tiled = tex.repeat(1, 3, 3, 1)
    wrapped = rasterizer.texture(tex, uv, boundary_mode="wrap")
    reference = F.grid_sample(tiled.permute(0, 3, 1, 2), ((uv + 1) / 3) * 2 - 1, mode="bilinear", align_corners=False)
    assert torch.allclose(wrapped, reference.permute(0, 2, 3, 1), atol=1e-5)


def test_texture_hand_values_and_gradients(rasterizer):
    tex = torch.tensor([[[0.0], [1.0]], [[2.0], [3.0]]])[None].requires_grad_(True)  # [1, 2, 2, 1]
    # Centre of the texture: the mean; texel centres: the texel; u = 0 wraps halfway to the far column.
    uv = torch.tensor([[[[0.5, 0.5], [0.25, 0.75], [0.0, 0.25]]]], requires_grad=True)
    out = rasterizer.texture(tex, uv)
    assert out[0, 0, :, 0].tolist() == pytest.approx([1.5, 2.0, 0.5])
    nearest = rasterizer.texture(tex, uv, filter_mode="nearest", boundary_mode="clamp")
    assert nearest[0, 0, :, 0].tolist() == [3.0, 2.0, 0.0]
    out.sum().backward()
    assert tex.grad.sum() == pytest.approx(3.0) and torch.isfinite(uv.grad).all()
    assert uv.grad[0, 0, 0].tolist() == pytest.approx([2.0, 4.0])  # d/du = 1 per half texel = 2; d/dv = 2 * 2


# --- antialias ------------------------------------------------------------------------------------


def test_antialiased_coverage_is_the_covered_fraction(rasterizer):
    # The right edge a quarter pixel past a pixel border: that column is 25 % covered (but in row 8,
    # whose last pixel lies on the other face, behind the interior diagonal); the diagonal between
    # the two faces' different colours is left alone.
    vertices, faces = quad(-0.5, 0.5 + 0.25 / 16, -0.375, 0.5)
    cameras = front_camera()
    pos_clip = clip_positions(vertices, cameras)
    rast = rasterizer.rasterize(pos_clip, faces, (RES, RES))
    colour = torch.where(rast[..., 3:] == 1, 1.0, 0.5) * (rast[..., 3:] > 0)
    out = rasterizer.antialias(torch.cat([colour, (rast[..., 3:] > 0).float()], -1), rast, pos_clip, faces)
    coverage = out[0, ..., 1]
    assert torch.allclose(coverage[9:22, 24], torch.full((13,), 0.25), atol=1e-4) and coverage[8, 24] == 0
    assert torch.allclose(coverage[8:22, 8:24], torch.ones(14, 16), atol=1e-5) and (coverage[:, 25:] == 0).all()
    assert torch.allclose(out[0, 8:22, 8:24, 0], colour[0, 8:22, 8:24, 0], atol=1e-5)


def test_silhouette_gradient_matches_finite_differences(rasterizer):
    # Moving the right edge outwards by one world unit moves it 16 pixels over 14 rows.
    vertices, faces = quad(-0.5, 0.5, -0.375, 0.5)
    cameras = front_camera()

    def coverage(positions: torch.Tensor) -> torch.Tensor:
        return rasterizer.render(positions, faces, cameras)["opacity"].sum()

    positions = vertices.clone().requires_grad_(True)
    coverage(positions).backward()
    outward = torch.zeros_like(vertices)
    outward[[1, 2], 1] = 1.0
    analytic = (positions.grad * outward).sum()
    step = 0.002  # 0.03 px: no pixel centre changes sides of any edge
    finite_difference = (coverage(vertices + step * outward) - coverage(vertices - step * outward)) / (2 * step)
    assert analytic.item() == pytest.approx(16 * 14, rel=0.02)
    assert finite_difference.item() == pytest.approx(analytic.item(), rel=0.02)
    # Moving the whole quad sideways leaves the total coverage unchanged.
    assert positions.grad[:, 1].sum().abs() < 1e-3 * analytic


def test_antialias_blends_towards_the_background_behind_an_occluder(rasterizer):
    # A small square in front of a large one: its silhouette blends with the surface behind.
    front_v, front_f = quad(-0.2, 5.25 * 1.5 / FOCAL, -0.2, 0.2, x=0.5)  # right edge at 21.25 px
    back_v, back_f = quad(-0.8, 0.8, -0.8, 0.8)
    vertices = torch.cat([front_v, back_v]).requires_grad_(True)
    faces = torch.cat([front_f, back_f + 4])
    colours = torch.cat([torch.ones(4, 1), torch.zeros(4, 1)])
    out = rasterizer.render(vertices, faces, front_camera(), attributes=colours)
    column = out["attributes"][0, 16, :, 0]
    assert 0.0 < column[21] < 1.0  # the partly covered column right of the small square
    column.sum().backward()
    assert vertices.grad[1, 1] > 0 and vertices.grad[2, 1] > 0  # widening it adds white


# --- parity with nvdiffrast ---------------------------------------------------------------------


def test_nvdiffrast_plugin_is_found_after_its_first_build(monkeypatch, tmp_path):
    """nvdiffrast 0.3.3 imports the plugin it just built by name; the fix puts torch's build folder
    on sys.path and retries (seen failing on an H200 with torch 2.11 before the fix)."""
    built = types.ModuleType("nvdiffrast_plugin_test")
    calls = []

    def get_plugin(gl=False):
        calls.append(gl)
        if str(tmp_path / "nvdiffrast_plugin_test") not in sys.path:
            raise ModuleNotFoundError("No module named 'nvdiffrast_plugin_test'", name="nvdiffrast_plugin_test")
        return built

    dr = types.SimpleNamespace(ops=types.SimpleNamespace(_get_plugin=get_plugin))
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(torch.utils.cpp_extension, "_get_build_directory", lambda name, verbose: str(tmp_path / name))
    _find_plugin_after_build(dr)
    assert dr.ops._get_plugin() is built and calls == [False, False]

    def other_missing(gl=False):
        raise ModuleNotFoundError("No module named 'ninja'", name="ninja")

    dr.ops._get_plugin = other_missing
    _find_plugin_after_build(dr)
    with pytest.raises(ModuleNotFoundError, match="ninja"):
        dr.ops._get_plugin()

needs_nvdiffrast = pytest.mark.skipif(
    not torch.cuda.is_available() or _import_nvdiffrast() is None, reason="needs CUDA and nvdiffrast (pip install diffrp-nvdiffrast)"
)


def _sphere_scene() -> tuple[torch.Tensor, torch.Tensor, CameraBatch]:
    mesh = trimesh.creation.icosphere(subdivisions=3)
    vertices = torch.as_tensor(mesh.vertices * [0.6, 0.8, 0.7], dtype=torch.float32)
    return vertices, torch.as_tensor(mesh.faces, dtype=torch.long), orbit_ring(2, 20.0, 2.8, 42.0, 64, start_azimuth_deg=10.0)


@pytest.mark.gpu
@needs_nvdiffrast
def test_cuda_rasterize_and_interpolate_match_torch():
    vertices, faces, cameras = _sphere_scene()
    backends = (("torch", "cpu"), ("cuda", "cuda"))
    with torch.no_grad():
        rast_t, rast_c = (MeshRasterizer(b).rasterize(clip_positions(vertices.to(d), cameras.to(d)), faces.to(d), (64, 64)).cpu() for b, d in backends)
    # nvdiffrast snaps vertices to a sub-pixel grid, so pixel centres within a hair of an edge may
    # go to either triangle (they show the same surface point up to that hair).
    covered_t, covered_c = rast_t[..., 3] > 0, rast_c[..., 3] > 0
    assert (covered_t != covered_c).float().mean() < 0.005
    both = covered_t & covered_c
    same = both & (rast_t[..., 3] == rast_c[..., 3])
    assert same.sum() > 0.98 * both.sum()

    # Gradients are compared where both chose the same triangle: a pixel given to a nearly
    # edge-on triangle has huge barycentric gradients, and one such pixel would swamp the rest.
    weights = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(0)) * same[..., None]
    results = {}
    for backend, device in backends:
        positions = vertices.detach().to(device).requires_grad_(True)  # a leaf on both devices
        rasterizer = MeshRasterizer(backend)
        rast = rasterizer.rasterize(clip_positions(positions, cameras.to(device)), faces.to(device), (64, 64))
        values = rasterizer.interpolate(positions, rast, faces.to(device))
        (values * weights.to(device)).sum().backward()
        results[backend] = (rast.detach().cpu(), values.detach().cpu(), positions.grad.cpu())
    (rast_t, values_t, grad_t), (rast_c, values_c, grad_c) = results["torch"], results["cuda"]
    assert torch.allclose(rast_t[same][:, :3], rast_c[same][:, :3], atol=1e-4)
    assert torch.allclose(values_t[same], values_c[same], atol=1e-4)
    assert (values_t[both] - values_c[both]).abs().max() < 0.02
    assert (grad_t - grad_c).norm() < 0.01 * grad_c.norm()


@pytest.mark.gpu
@needs_nvdiffrast
@pytest.mark.parametrize("boundary_mode", ["wrap", "clamp"])
@pytest.mark.parametrize("filter_mode", ["linear", "nearest"])
def test_cuda_texture_matches_torch(filter_mode, boundary_mode):
    generator = torch.Generator().manual_seed(0)
    tex = torch.rand(2, 16, 24, 3, generator=generator)
    uv = torch.rand(2, 32, 32, 2, generator=generator) * 1.6 - 0.3
    outputs = {}
    for backend, device in (("torch", "cpu"), ("cuda", "cuda")):
        t, u = tex.detach().to(device).requires_grad_(True), uv.detach().to(device).requires_grad_(True)
        out = MeshRasterizer(backend).texture(t, u, filter_mode=filter_mode, boundary_mode=boundary_mode)
        out.square().sum().backward()
        uv_grad = torch.zeros_like(u) if u.grad is None else u.grad  # nearest lookups: no uv gradient
        outputs[backend] = [x.detach().cpu() for x in (out, t.grad, uv_grad)]
    for torch_value, cuda_value in zip(outputs["torch"], outputs["cuda"]):
        assert torch.allclose(torch_value, cuda_value, atol=1e-3, rtol=1e-3)


@pytest.mark.gpu
@needs_nvdiffrast
def test_cuda_antialias_matches_torch():
    """Both antialias the coverage of one (nvdiffrast's) rasterization, so only the silhouette
    blending and its gradient are compared."""
    vertices, faces, cameras = _sphere_scene()
    with torch.no_grad():
        rast = MeshRasterizer("cuda").rasterize(clip_positions(vertices.cuda(), cameras.to("cuda")), faces.cuda(), (64, 64))
    results = {}
    for backend, device in (("torch", "cpu"), ("cuda", "cuda")):
        positions = vertices.detach().to(device).requires_grad_(True)  # a leaf on both devices
        coverage = (rast[..., 3:] > 0).float().to(device)
        out = MeshRasterizer(backend).antialias(coverage, rast.to(device), clip_positions(positions, cameras.to(device)), faces.to(device))
        out.sum().backward()
        results[backend] = (out.detach().cpu(), positions.grad.cpu())
    (opacity_t, grad_t), (opacity_c, grad_c) = results["torch"], results["cuda"]
    assert (opacity_t - opacity_c).abs().mean() < 2e-3
    assert (opacity_t - opacity_c).abs().sum() < 0.02 * opacity_c.sum()
    assert F.cosine_similarity(grad_t.flatten(), grad_c.flatten(), dim=0) > 0.95
