"""framework.renderers.dmtet, .normal_map and .depth_map: the render dict of a DMTet, the normal
map's camera frame, the depth map's scale, gradients from the silhouette and the normal map to the
SDF, a mesh that changes between renders, and the material's albedo (PBR) in place of the
representation's."""

from __future__ import annotations

import pytest
import torch

from framework.cameras.camera import CameraBatch
from framework.cameras.distribution import OrbitDistribution
from framework.renderers.depth_map import depth_map
from framework.renderers.dmtet import DMTetRenderer
from framework.renderers.normal_map import camera_space_normals, normal_map
from framework.representations.background import SolidBackground
from framework.representations.dmtet import DMTet, ellipsoid_sdf
from framework.representations.encodings import TriplaneEncoding
from framework.representations.environment_light import EnvironmentLight
from framework.representations.materials import DiffuseMaterial
from framework.representations.pbr import PBRMaterial

SIZE = 32


def _front_cameras(n: int = 1) -> CameraBatch:
    """`n` cameras on the equator (azimuths 0, 90, ...) looking at the origin."""
    return CameraBatch.from_orbit(torch.zeros(n), torch.arange(n) * 90.0, torch.full((n,), 2.8), torch.full((n,), 42.0), SIZE)


def _sphere(radius: float = 0.5) -> DMTet:
    return DMTet(resolution=16, encoding=None, init_radii=(radius,) * 3)


def _render(dmtet: DMTet, cameras: CameraBatch, material: torch.nn.Module | None = None) -> dict:
    material = material if material is not None else DiffuseMaterial()
    return DMTetRenderer("torch")(dmtet, material, SolidBackground(), cameras, material.sample_shading(cameras, False), False)


def test_render_keys_shapes_and_the_normal_map_of_a_sphere() -> None:
    """A sphere seen from the front: camera-space normal (0, 0, 1) at the centre, i.e. colour
    (0.5, 0.5, 1), in every view; white and empty in the corners."""
    dmtet, cameras = _sphere(), _front_cameras(2)
    render = _render(dmtet, cameras)
    assert set(render) == {"rgb", "normal_map", "opacity", "depth", "normal", "albedo", "depth_map", "albedo_map", "info"}
    for key, channels in (("rgb", 3), ("normal_map", 3), ("opacity", 1), ("depth", 1), ("normal", 3), ("albedo", 3), ("depth_map", 1), ("albedo_map", 3)):
        assert render[key].shape == (2, SIZE, SIZE, channels), key
    vertices, faces, sdf = dmtet.surface_with_sdf()
    assert torch.equal(render["info"]["faces"], faces) and torch.equal(render["info"]["vertices"], vertices)
    assert torch.equal(render["info"]["sdf"], sdf) and render["info"]["edges"] is dmtet.edges
    centre = render["normal_map"][:, SIZE // 2 - 1 : SIZE // 2 + 1, SIZE // 2 - 1 : SIZE // 2 + 1].reshape(2, -1, 3)
    torch.testing.assert_close(centre, torch.tensor([0.5, 0.5, 1.0]).expand_as(centre), atol=0.05, rtol=0)
    for corner in (render["normal_map"][:, 0, 0], render["rgb"][:, -1, -1]):
        assert torch.equal(corner, torch.ones(2, 3))
    assert torch.equal(render["opacity"][:, 0, 0], torch.zeros(2, 1))
    assert (render["opacity"][:, SIZE // 2, SIZE // 2] == 1).all()
    # World normals of covered pixels are unit; the white albedo of a DMTet without colour.
    covered = render["opacity"][..., 0] == 1
    torch.testing.assert_close(render["normal"][covered].norm(dim=-1), torch.ones(int(covered.sum())), atol=1e-4, rtol=0)
    assert torch.equal(render["albedo"][covered], torch.ones(int(covered.sum()), 3))
    # The visible disk's radius in pixels: the sphere's silhouette at distance 2.8, fovy 42.
    focal = SIZE / 2 / torch.tan(torch.deg2rad(torch.tensor(21.0)))
    expected_area = torch.pi * (focal * 0.5 / (2.8**2 - 0.25) ** 0.5) ** 2
    assert abs(render["opacity"][0].sum() / expected_area - 1) < 0.1


def test_opacity_and_normal_map_gradients_reach_the_sdf() -> None:
    """The silhouette (antialiased coverage) and the normal map both give the SDF a gradient."""
    for key in ("opacity", "normal_map"):
        dmtet = _sphere()
        _render(dmtet, _front_cameras())[key].sum().backward()
        assert dmtet.vertex_sdf.grad is not None and dmtet.vertex_sdf.grad.abs().sum() > 0, key
        assert dmtet.vertex_deformation.grad.abs().sum() > 0, key


def test_the_opacity_gradient_grows_the_silhouette() -> None:
    """More coverage wanted: the gradient step lowers the SDF (grows the shape) somewhere, never
    raises it at a surface vertex."""
    dmtet = _sphere()
    _render(dmtet, _front_cameras())["opacity"].sum().backward()
    grad = dmtet.vertex_sdf.grad
    assert (grad < 0).any() and grad.max() <= 1e-8


def test_a_changed_sdf_changes_the_mesh_between_renders() -> None:
    dmtet, cameras = _sphere(0.5), _front_cameras()
    first = _render(dmtet, cameras)
    with torch.no_grad():
        dmtet.vertex_sdf.copy_(ellipsoid_sdf(dmtet.grid, (0.3, 0.3, 0.3)))
    second = _render(dmtet, cameras)
    assert len(first["info"]["faces"]) != len(second["info"]["faces"])
    assert 0 < second["opacity"].sum() < first["opacity"].sum()


def test_a_material_with_textures_gives_the_albedo() -> None:
    """With PBRMaterial the albedo map is the material's field (here constant), not the DMTet's
    white."""
    material = PBRMaterial(encoding=TriplaneEncoding(resolution=8, channels=2), light=EnvironmentLight(n_levels=2, lut_size=8, lut_samples=64))
    with torch.no_grad():
        material.mlp[-1].weight.zero_()
        material.mlp[-1].bias[:3] = torch.tensor([1.0, -1.0, 0.0])
    render = _render(_sphere(), _front_cameras(), material)
    covered = render["opacity"][..., 0] == 1
    expected = torch.sigmoid(torch.tensor([1.0, -1.0, 0.0]))
    torch.testing.assert_close(render["albedo"][covered], expected.expand(int(covered.sum()), 3))
    assert torch.equal(render["albedo"][render["opacity"][..., 0] == 0], torch.zeros(int((render["opacity"] == 0).sum()), 3))
    assert not torch.allclose(render["rgb"][covered], expected.expand(int(covered.sum()), 3))  # lit, not the albedo


def test_the_depth_map_and_albedo_map_a_prior_sees() -> None:
    """RichDreamer's channels: the depth map of a sphere of radius 0.5 is 0.5 + 0.5 / 2 at its
    nearest point and 0 off it; the albedo map is the albedo inside, white outside."""
    render = _render(_sphere(0.5), _front_cameras(2))
    centre = render["depth_map"][:, SIZE // 2 - 1 : SIZE // 2 + 1, SIZE // 2 - 1 : SIZE // 2 + 1]
    torch.testing.assert_close(centre, torch.full_like(centre, 0.75), atol=0.02, rtol=0)
    covered, empty = render["opacity"][..., 0] == 1, render["opacity"][..., 0] == 0
    assert torch.equal(render["depth_map"][empty], torch.zeros(int(empty.sum()), 1))
    assert (render["depth_map"][covered] > 0.5).all() and (render["depth_map"][covered] <= 0.76).all()
    assert torch.equal(render["albedo_map"][covered], render["albedo"][covered])
    assert torch.equal(render["albedo_map"][empty], torch.ones(int(empty.sum()), 3))


def test_a_depth_map_does_not_depend_on_the_camera_distance() -> None:
    """The origin maps to 0.5 from any distance; a point `radius` nearer to 1, farther to 0;
    nothing seen to 0; a bad radius is named."""
    cameras = CameraBatch.from_orbit(torch.tensor([10.0, 40.0]), torch.tensor([0.0, 120.0]), torch.tensor([2.0, 3.5]), torch.full((2,), 42.0), 2)
    distance = torch.tensor([2.0, 3.5]).view(2, 1, 1, 1)
    depth = distance + torch.tensor([0.0, -1.0, 1.0, 7.0]).view(1, 2, 2, 1)
    coverage = torch.tensor([1.0, 1.0, 1.0, 0.0]).view(1, 2, 2, 1).expand(2, 2, 2, 1)
    expected = torch.tensor([0.5, 1.0, 0.0, 0.0]).view(1, 2, 2, 1).expand(2, 2, 2, 1)
    torch.testing.assert_close(depth_map(depth, coverage, cameras), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(depth_map(depth, coverage, cameras, radius=2.0)[:, 0, 1], torch.full((2, 1), 0.75), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="radius=0"):
        depth_map(depth, coverage, cameras, radius=0)


def test_the_texture_field_is_queried_once_per_covered_pixel() -> None:
    """The shading reuses the textures that give the albedo map: one field pass per render."""
    material = PBRMaterial(encoding=TriplaneEncoding(resolution=8, channels=2), light=EnvironmentLight(n_levels=2, lut_size=8, lut_samples=64))
    queried: list[int] = []
    material.encoding.register_forward_hook(lambda module, inputs, output: queried.append(inputs[0].shape[0]))
    render = _render(_sphere(), _front_cameras(2), material)
    assert queried == [int((render["normal"].abs().sum(-1) > 0).sum())]


def test_camera_space_normals_are_opengl_camera_axes() -> None:
    """Each camera's own right, up and back axes (c2w columns) become x, y and z; a normal map
    colours the back axis (0.5, 0.5, 1) and uncovered pixels white."""
    cameras = OrbitDistribution().sample(5, 4, torch.Generator().manual_seed(0))
    axes = cameras.c2w[:, :3, :3].transpose(1, 2)  # [B, axis, xyz]: right, up, back in world
    torch.testing.assert_close(camera_space_normals(axes, cameras), torch.eye(3).expand(5, 3, 3), atol=1e-5, rtol=0)
    back = cameras.c2w[:, None, None, :3, 2].expand(5, 4, 4, 3)
    coverage = torch.zeros(5, 4, 4, 1)
    coverage[:, :2] = 1.0
    colours = normal_map(2.0 * back, coverage, cameras)  # any length: normalised
    torch.testing.assert_close(colours[:, :2], torch.tensor([0.5, 0.5, 1.0]).expand(5, 2, 4, 3), atol=1e-5, rtol=0)
    assert torch.equal(colours[:, 2:], torch.ones(5, 2, 4, 3))


def _needs_cuda_and(module: str):
    import importlib.util

    return pytest.mark.skipif(
        not torch.cuda.is_available() or importlib.util.find_spec(module) is None, reason=f"needs CUDA and {module}"
    )


@pytest.mark.gpu
@_needs_cuda_and("nvdiffrast")
def test_nvdiffrast_renders_a_dmtet_like_the_torch_rasterizer():
    """The same DMTet (its mesh changes with every SDF) through nvdiffrast on CUDA and through the
    torch rasterizer: coverage, normal map and the SDF's gradient agree (nvdiffrast snaps vertices
    to a sub-pixel grid, so a few edge pixels may differ)."""
    results = {}
    for backend, device in (("torch", "cpu"), ("cuda", "cuda")):
        dmtet = DMTet(resolution=16, encoding=None, init_radii=(0.55, 0.4, 0.3)).to(device)
        cameras = OrbitDistribution().sample(2, 64, torch.Generator().manual_seed(0)).to(device)
        material = DiffuseMaterial()
        out = DMTetRenderer(backend)(dmtet, material, SolidBackground().to(device), cameras, material.sample_shading(cameras, False), False)
        (out["opacity"].sum() + out["normal_map"].sum()).backward()
        results[backend] = [t.detach().cpu() for t in (out["opacity"], out["normal_map"], dmtet.vertex_sdf.grad)]
    (opacity_t, normal_t, grad_t), (opacity_c, normal_c, grad_c) = results["torch"], results["cuda"]
    assert (opacity_t - opacity_c).abs().mean() < 5e-3
    assert (normal_t - normal_c).abs().mean() < 5e-3
    assert torch.nn.functional.cosine_similarity(grad_t, grad_c, dim=0) > 0.95


@pytest.mark.gpu
@_needs_cuda_and("tinycudann")
def test_a_hash_grid_dmtet_has_the_same_sdf_and_mesh_on_tinycudann_and_in_torch():
    """One hash-grid DMTet: its SDF at the grid's vertices and its mesh from tinycudann's kernel
    and from the torch encoding (same parameters)."""
    from framework.representations.encodings import HashGridEncoding

    dmtet = DMTet(resolution=32, encoding=HashGridEncoding(n_levels=8, log2_hashmap_size=14, base_resolution=8, finest_resolution=256), hidden=32).cuda()
    sdf_cuda, _ = dmtet.sdf_and_deformation()
    vertices_cuda, faces_cuda = dmtet.surface()
    dmtet.encoding.backend = "torch"
    sdf_torch, _ = dmtet.sdf_and_deformation()
    vertices_torch, faces_torch = dmtet.surface()
    torch.testing.assert_close(sdf_cuda, sdf_torch, atol=1e-3, rtol=0)
    assert faces_cuda.shape[0] == pytest.approx(faces_torch.shape[0], rel=0.01)
