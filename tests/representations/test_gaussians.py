"""framework.representations.gaussians and framework.export.gaussian_ply: inits, density field,
checkpoint resize, and the standard 3DGS .ply (our reader, plyfile, gsplat's exporter)."""

from __future__ import annotations

import math

import numpy as np
import plyfile
import pytest
import torch
import trimesh
from gsplat.exporter import export_splats
from gsplat.strategy import DefaultStrategy
from gsplat.utils import normalized_quat_to_rotmat

from framework.export.gaussian_ply import OPACITY_THRESHOLD, read_gaussian_ply, write_gaussian_ply
from framework.export.marching_cubes import sample_grid
from framework.export.mesh_io import Texture, write_glb, write_obj
from framework.representations.gaussians import SH_C0, GaussianModel, quat_to_rotmat

KEYS = ("means", "scales", "quats", "opacities", "sh0", "shN")
BOX_EXTENTS = (0.2, 0.4, 0.8)  # asymmetric, so a wrong up axis shows


def random_model(n: int, sh_degree: int = 0, seed: int = 0) -> GaussianModel:
    """A model with random anisotropic, rotated Gaussians and random SH coefficients."""
    model = GaussianModel(n_init=n, sh_degree=sh_degree, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        model.params["scales"].copy_(torch.empty(n, 3).uniform_(-3.5, -2.0, generator=generator))
        model.params["quats"].copy_(torch.randn(n, 4, generator=generator))
        model.params["opacities"].copy_(torch.randn(n, generator=generator))
        model.params["sh0"].copy_(torch.randn(n, 1, 3, generator=generator))
        model.params["shN"].copy_(torch.randn(model.params["shN"].shape, generator=generator))
    return model


def assert_params_equal(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert set(actual) == set(KEYS)
    for key in KEYS:
        torch.testing.assert_close(actual[key], expected[key].detach(), rtol=0, atol=0, msg=key)


# --- inits and activations ----------------------------------------------------------------------


def test_sphere_init_shapes_and_activations():
    rng_state = torch.random.get_rng_state()
    model = GaussianModel(n_init=300, sh_degree=2, init_radius=0.4, init_opacity=0.2)
    assert torch.equal(torch.random.get_rng_state(), rng_state), "the init must not touch the global RNG"
    shapes = {key: tuple(value.shape) for key, value in model.params.items()}
    assert shapes == {"means": (300, 3), "scales": (300, 3), "quats": (300, 4), "opacities": (300,), "sh0": (300, 1, 3), "shN": (300, 8, 3)}
    assert all(p.requires_grad and p.dtype == torch.float32 for p in model.parameters())
    assert model.num_gaussians == 300
    assert model.means.norm(dim=-1).max() <= 0.4
    torch.testing.assert_close(model.scales, model.params["scales"].exp())
    assert 0.005 < model.scales.median() < 0.1  # about the spacing of 300 points in the ball
    torch.testing.assert_close(model.quats.norm(dim=-1), torch.ones(300))
    torch.testing.assert_close(model.opacities, torch.full((300,), 0.2))
    assert model.colors.shape == (300, 9, 3) and torch.equal(model.colors[:, 0], model.params["sh0"][:, 0])
    assert ((model.rgb >= 0.4 - 1e-6) & (model.rgb <= 0.6 + 1e-6)).all()
    assert model.rgb.std() > 0.01  # random greys, not one colour
    torch.testing.assert_close(model.rgb, 0.5 + SH_C0 * model.params["sh0"][:, 0])

    same, other = GaussianModel(n_init=300, sh_degree=2, init_radius=0.4, init_opacity=0.2), GaussianModel(n_init=300, seed=1)
    assert torch.equal(same.means, model.means) and not torch.equal(other.means, model.means)
    fixed = GaussianModel(n_init=10, init_color=[0.2, 0.4, 0.8], init_scale=0.05)
    torch.testing.assert_close(fixed.rgb, torch.tensor([0.2, 0.4, 0.8]).expand(10, 3))
    torch.testing.assert_close(fixed.scales, torch.full((10, 3), 0.05))
    with pytest.raises(ValueError, match="unknown init"):
        GaussianModel(init="cube")
    with pytest.raises(ValueError, match="init_path"):
        GaussianModel(init="mesh")


def test_points_init(tmp_path):
    # A lattice with spacing 0.1: every inner point's 3 nearest neighbours are 0.1 away.
    axis = torch.arange(5) * 0.1
    points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    colors = torch.rand(len(points), 3, generator=torch.Generator().manual_seed(0))
    model = GaussianModel.from_points(points, colors, init_opacity=0.3)
    assert torch.equal(model.means, points)
    torch.testing.assert_close(model.rgb, colors)
    torch.testing.assert_close(model.scales, torch.full((125, 3), 0.1))
    torch.testing.assert_close(model.opacities, torch.full((125,), 0.3))

    np.save(tmp_path / "cloud.npy", torch.cat([points, colors], dim=1).numpy())
    from_file = GaussianModel(init="points", init_path=str(tmp_path / "cloud.npy"), init_opacity=0.3)
    assert_params_equal(dict(from_file.params), dict(model.params))
    trimesh.PointCloud(points.numpy(), colors=np.full((125, 4), [255, 0, 0, 255], np.uint8)).export(tmp_path / "cloud.ply")
    from_ply_cloud = GaussianModel(init="points", init_path=str(tmp_path / "cloud.ply"))
    torch.testing.assert_close(from_ply_cloud.means, points)
    torch.testing.assert_close(from_ply_cloud.rgb, torch.tensor([1.0, 0.0, 0.0]).expand(125, 3))


def assert_on_box(points: torch.Tensor) -> None:
    """Every point lies on the surface of the centred box of BOX_EXTENTS, in our z-up frame."""
    relative = points.abs() / (torch.tensor(BOX_EXTENTS) / 2)
    assert relative.max() <= 1 + 1e-5
    torch.testing.assert_close(relative.max(dim=1).values, torch.ones(len(points)))
    assert (relative[:, 2] > 0.9).any()  # samples reach the tall (z) faces


def test_mesh_init_vertex_colours_texture_and_trimesh(tmp_path):
    box = trimesh.creation.box(extents=BOX_EXTENTS)
    write_glb(tmp_path / "green.glb", box.vertices, box.faces, vertex_colors=np.tile([0.0, 1.0, 0.0], (len(box.vertices), 1)))
    model = GaussianModel.from_mesh(tmp_path / "green.glb", 200)
    assert model.num_gaussians == 200
    assert_on_box(model.means.detach())
    torch.testing.assert_close(model.rgb, torch.tensor([0.0, 1.0, 0.0]).expand(200, 3))
    configured = GaussianModel(n_init=200, init="mesh", init_path=str(tmp_path / "green.glb"))
    assert_params_equal(dict(configured.params), dict(model.params))

    image = np.zeros((4, 4, 3), np.uint8)
    image[..., 0] = 255
    uv = np.random.default_rng(0).random((len(box.vertices), 2))
    write_obj(tmp_path / "red.obj", box.vertices, box.faces, texture=Texture(uv, image))
    textured = GaussianModel.from_mesh(tmp_path / "red.obj", 50)
    assert_on_box(textured.means.detach())
    torch.testing.assert_close(textured.rgb, torch.tensor([1.0, 0.0, 0.0]).expand(50, 3))

    box.visual.face_colors = [0, 0, 255, 255]
    direct = GaussianModel.from_mesh(box, 50)  # a Trimesh is taken as already z-up
    assert_on_box(direct.means.detach())
    torch.testing.assert_close(direct.rgb, torch.tensor([0.0, 0.0, 1.0]).expand(50, 3))


def test_ply_init_and_sh_padding(tmp_path):
    model = random_model(40, sh_degree=1)
    write_gaussian_ply(tmp_path / "g.ply", model, opacity_threshold=0.0)
    assert_params_equal(dict(GaussianModel.from_ply(tmp_path / "g.ply").params), dict(model.params))
    configured = GaussianModel(init="ply", init_path=str(tmp_path / "g.ply"), sh_degree=1)
    assert_params_equal(dict(configured.params), dict(model.params))

    padded = GaussianModel.from_ply(tmp_path / "g.ply", sh_degree=2)
    assert padded.params["shN"].shape == (40, 8, 3)
    assert torch.equal(padded.params["shN"][:, :3], model.params["shN"].detach()) and not padded.params["shN"][:, 3:].any()
    with pytest.raises(ValueError, match="exceeds the model's sh_degree"):
        GaussianModel(init="ply", init_path=str(tmp_path / "g.ply"))


def test_params_pass_gsplat_strategy_check():
    model = GaussianModel(n_init=16, sh_degree=1)
    optimizers = {key: torch.optim.Adam([param]) for key, param in model.params.items()}
    DefaultStrategy().check_sanity(model.params, optimizers)


# --- density ------------------------------------------------------------------------------------


def test_rotation_matches_gsplat():
    quats = torch.nn.functional.normalize(torch.randn(64, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    torch.testing.assert_close(quat_to_rotmat(quats), normalized_quat_to_rotmat(quats))


def test_density_of_one_rotated_gaussian():
    # 90 degrees about z maps the Gaussian's x axis (sigma 0.1) to world y, its y axis (0.2) to -x.
    model = GaussianModel.from_points(torch.tensor([[0.1, -0.2, 0.3]]), init_scale=1.0, init_opacity=0.5)
    with torch.no_grad():
        model.params["scales"].copy_(torch.tensor([[0.1, 0.2, 0.3]]).log())
        model.params["quats"].copy_(torch.tensor([[math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)]]))
    offsets = torch.tensor([[0.0, 0.0, 0.0], [0.2, 0.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 0.3], [0.0, 0.2, 0.0]])
    expected = 0.5 * torch.exp(-0.5 * torch.tensor([0.0, 1.0, 1.0, 1.0, 4.0]))
    torch.testing.assert_close(model.density(model.means + offsets), expected.detach())


def truncated_density(model: GaussianModel, points: torch.Tensor) -> torch.Tensor:
    """Brute-force reference of `density_grid`: every Gaussian cut off at Mahalanobis distance 3,
    the covariance built with gsplat's rotation and inverted by torch."""
    rotations = normalized_quat_to_rotmat(model.quats)
    covariances = rotations @ torch.diag_embed(model.scales.square()) @ rotations.transpose(1, 2)
    offsets = points[:, None, :] - model.means
    squared = torch.einsum("pni,nij,pnj->pn", offsets, torch.linalg.inv(covariances.double()).float(), offsets)
    return (model.opacities * torch.exp(-0.5 * squared) * (squared <= 9.0)).sum(dim=-1)


@torch.no_grad()
def test_density_grid_matches_brute_force():
    model = random_model(60)
    model.params["means"].mul_(2.0)  # some Gaussians cross the grid's faces
    model.params["scales"][:5] = math.log(0.3)
    resolution, bound = 20, 0.8
    grid = model.density_grid(resolution, bound)
    assert grid.shape == (resolution,) * 3 and grid.dtype == torch.float32

    axis = torch.linspace(-bound, bound, resolution)
    points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    torch.testing.assert_close(grid.reshape(-1), truncated_density(model, points), rtol=1e-4, atol=1e-5)
    # Same (x, y, z) order as marching cubes' sampler. The 3-sigma cut-off loses at most
    # alpha * exp(-4.5) per Gaussian at a point, and in all the 2.9 % of a 3D Gaussian's mass
    # that lies beyond Mahalanobis distance 3.
    exact = torch.from_numpy(sample_grid(model.density, resolution, bound))
    assert (exact - grid).min() >= -1e-5
    assert (exact - grid).max() <= model.opacities.sum() * math.exp(-4.5)
    assert (exact - grid).sum() < 0.03 * exact.sum()


@torch.no_grad()
def test_density_grid_axis_order_and_empty_model():
    model = GaussianModel.from_points(torch.tensor([[0.5, -0.25, 0.0]]), init_scale=0.05, init_opacity=0.9)
    grid = model.density_grid(9, 1.0)  # cells at multiples of 0.25
    assert np.unravel_index(int(grid.argmax()), grid.shape) == (6, 3, 4)
    assert grid.max() == pytest.approx(0.9)
    assert not GaussianModel(n_init=0).density_grid(8).any()


# --- checkpoints --------------------------------------------------------------------------------


def test_resize_then_load_state_dict():
    """A checkpoint records each representation's `shape_state`; loading takes that size first
    (`load_shape_state`, a resize), then the state dict."""
    trained = random_model(123, sh_degree=1)
    state = trained.state_dict()
    assert trained.shape_state() == {"n_gaussians": 123}
    fresh = GaussianModel(n_init=7, sh_degree=1, seed=5)
    fresh.load_shape_state(trained.shape_state())
    assert fresh.num_gaussians == 123 and fresh.params["shN"].shape == (123, 3, 3)
    assert all(p.requires_grad for p in fresh.parameters())
    fresh.load_state_dict(state)
    assert_params_equal(dict(fresh.params), dict(trained.params))


# --- .ply files ---------------------------------------------------------------------------------


def test_ply_round_trip_and_layout(tmp_path):
    model = random_model(50, sh_degree=2)
    assert write_gaussian_ply(tmp_path / "g.ply", model, opacity_threshold=0.0) == 50
    assert_params_equal(read_gaussian_ply(tmp_path / "g.ply"), dict(model.params))

    ply = plyfile.PlyData.read(str(tmp_path / "g.ply"))
    assert [element.name for element in ply.elements] == ["vertex"]
    assert ply.byte_order == "<" and not ply.text
    vertex = ply["vertex"]
    rest = [f"f_rest_{i}" for i in range(24)]
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", *rest, "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert [p.name for p in vertex.properties] == names
    assert all(vertex.data.dtype[name] == np.dtype("<f4") for name in names)
    assert not any(vertex[name].any() for name in ("nx", "ny", "nz"))
    params = {key: value.detach().numpy() for key, value in model.params.items()}
    np.testing.assert_array_equal(np.stack([vertex["x"], vertex["y"], vertex["z"]], 1), params["means"])
    np.testing.assert_array_equal(vertex["opacity"], params["opacities"])
    np.testing.assert_array_equal(vertex["rot_0"], params["quats"][:, 0])  # w first
    np.testing.assert_array_equal(vertex["scale_2"], params["scales"][:, 2])
    np.testing.assert_array_equal(vertex["f_dc_1"], params["sh0"][:, 0, 1])
    for channel in range(3):  # channel-major: red's 8 coefficients, then green's, then blue's
        for k in range(8):
            np.testing.assert_array_equal(vertex[f"f_rest_{channel * 8 + k}"], params["shN"][:, k, channel])


def test_ply_matches_gsplat_exporter(tmp_path):
    model = random_model(40, sh_degree=1)
    with torch.no_grad():
        model.params["opacities"].clamp_(min=-3.0)  # gsplat's plain .ply keeps transparent ones
    params = {key: value.detach() for key, value in model.params.items()}
    write_gaussian_ply(tmp_path / "ours.ply", params)
    export_splats(**params, format="ply", save_to=str(tmp_path / "gsplat.ply"))

    ours = plyfile.PlyData.read(str(tmp_path / "ours.ply"))["vertex"]
    theirs = plyfile.PlyData.read(str(tmp_path / "gsplat.ply"))["vertex"]
    their_names = [p.name for p in theirs.properties]
    assert [p.name for p in ours.properties if p.name not in ("nx", "ny", "nz")] == their_names
    for name in their_names:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
    assert_params_equal(read_gaussian_ply(tmp_path / "gsplat.ply"), params)  # no normals there


def test_ply_drops_non_finite_and_transparent(tmp_path):
    params = {key: value.detach().clone() for key, value in random_model(10, sh_degree=1).params.items()}
    params["opacities"][:] = 2.0
    params["means"][1, 0] = float("nan")
    params["shN"][2, 2, 1] = float("inf")
    params["scales"][3, 0] = -float("inf")
    low = math.log(OPACITY_THRESHOLD / (1 - OPACITY_THRESHOLD))
    params["opacities"][4] = low - 1e-3  # just below the threshold
    params["opacities"][5] = low + 1e-3  # just above: kept
    params["opacities"][6] = -20.0
    assert write_gaussian_ply(tmp_path / "g.ply", params) == 5
    kept = torch.tensor([0, 5, 7, 8, 9])
    assert_params_equal(read_gaussian_ply(tmp_path / "g.ply"), {key: value[kept] for key, value in params.items()})


def test_read_rejects_missing_truncated_and_foreign_files(tmp_path):
    write_gaussian_ply(tmp_path / "g.ply", random_model(20))
    data = (tmp_path / "g.ply").read_bytes()
    (tmp_path / "truncated.ply").write_bytes(data[: len(data) // 2])
    trimesh.creation.box().export(tmp_path / "mesh.ply")
    (tmp_path / "text.ply").write_text("not a ply file\n")
    with pytest.raises(FileNotFoundError, match="missing.ply"):
        read_gaussian_ply(tmp_path / "missing.ply")
    for name in ("truncated.ply", "mesh.ply", "text.ply"):
        with pytest.raises(ValueError, match="not a 3DGS Gaussian .ply") as error:
            read_gaussian_ply(tmp_path / name)
        message = str(error.value)
        assert str(tmp_path / name) in message and "\n" not in message
