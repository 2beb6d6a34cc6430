import math

import torch
from torch import nn

from framework.cameras.camera import CameraBatch
from framework.renderers.normal_map import camera_space_normals
from framework.renderers.occupancy import OccupancyGrid
from framework.renderers.volume import VolumeRenderer, unit_sphere_interval
from framework.representations.background import MLPBackground, RandomSolidBackground, SolidBackground
from framework.representations.encodings import TriplaneEncoding
from framework.representations.materials import DiffuseMaterial, ShadingAugmentation
from framework.representations.nerf import NeRFField


class ConstantBall(nn.Module):
    """Density `sigma` inside a ball of `radius`, zero outside; albedo red."""

    def __init__(self, sigma: float, radius: float) -> None:
        super().__init__()
        self.sigma, self.radius = sigma, radius

    def density(self, points):
        return torch.where(points.norm(dim=-1) < self.radius, torch.full_like(points[:, 0], self.sigma), torch.zeros_like(points[:, 0]))

    def forward(self, points):
        return self.density(points), torch.tensor([1.0, 0.0, 0.0]).expand(points.shape[0], 3)

    def normals(self, points, density):
        return torch.nn.functional.normalize(points, dim=-1)


def _front_camera(size: int = 16) -> CameraBatch:
    return CameraBatch.from_orbit(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([3.0]), torch.tensor([40.0]), size)


def test_unit_sphere_interval():
    near, far = unit_sphere_interval(torch.tensor([[3.0, 0, 0], [3.0, 2.0, 0]]), torch.tensor([[-1.0, 0, 0], [-1.0, 0, 0]]))
    torch.testing.assert_close(near, torch.tensor([2.0, 3.0]))
    torch.testing.assert_close(far, torch.tensor([4.0, 3.0]))


def test_opacity_of_a_constant_ball_matches_beer_lambert():
    renderer = VolumeRenderer(n_samples=512)
    field = ConstantBall(sigma=2.0, radius=0.5)
    camera = _front_camera(17)
    out = renderer(field, DiffuseMaterial(), SolidBackground(), camera, DiffuseMaterial().sample_shading(camera, False), training=False)
    centre = out["opacity"][0, 8, 8, 0]
    expected = 1 - math.exp(-2.0 * 1.0)  # chord of length 2r through the centre
    assert abs(centre.item() - expected) < 0.01
    assert out["opacity"][0, 0, 0, 0] == 0
    torch.testing.assert_close(out["rgb"][0, 0, 0], torch.ones(3))  # white background where empty
    assert abs(out["depth"][0, 8, 8, 0].item() - 2.9) < 0.4  # weighted depth near the front surface


def test_occupancy_grid_skips_empty_space_without_changing_the_image():
    field = ConstantBall(sigma=5.0, radius=0.4)
    grid = OccupancyGrid(resolution=16, update_every=1)
    assert grid.update(field.density, step=0)
    assert 0 < grid.occupied.float().mean() < 0.2
    camera = _front_camera(16)
    shading = DiffuseMaterial().sample_shading(camera, False)
    with_grid = VolumeRenderer(n_samples=64, occupancy=grid)(field, DiffuseMaterial(), SolidBackground(), camera, shading, training=False)
    without = VolumeRenderer(n_samples=64)(field, DiffuseMaterial(), SolidBackground(), camera, shading, training=False)
    torch.testing.assert_close(with_grid["rgb"], without["rgb"], atol=1e-5, rtol=0)


def test_occupancy_update_is_seeded_by_step():
    field = NeRFField(TriplaneEncoding(resolution=8, channels=2))
    a, b = OccupancyGrid(resolution=8, update_every=4, seed=1), OccupancyGrid(resolution=8, update_every=4, seed=1)
    assert not a.update(field.density, step=3)
    a.update(field.density, step=4)
    b.update(field.density, step=4)
    assert torch.equal(a.density, b.density)


def test_nerf_field_gradients_blob_and_normals():
    torch.manual_seed(0)
    field = NeRFField(TriplaneEncoding(resolution=16, channels=4), blob_density=10.0, blob_radius=0.5)
    points = torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.0, 0.0], [0.0, 0.3, 0.0]])
    density, albedo = field(points)
    assert density[0] > 5.0 > density[1]
    first, _, last = field.albedo_head  # albedo by hand: the albedo head (Linear, ReLU, Linear) on the point's features, then a sigmoid
    features = field.encoding(points)
    expected = torch.sigmoid(torch.relu(features @ first.weight.T + first.bias) @ last.weight.T + last.bias)
    torch.testing.assert_close(albedo, expected)
    assert (albedo[0] - albedo[1]).abs().max() > 1e-4 and (albedo[0] - albedo[2]).abs().max() > 1e-4  # it depends on the point
    normals = field.normals(points[1:], density[1:])
    assert normals[0, 0] > 0.9 and normals[1, 1] > 0.9  # the blob's normals point outwards
    density.sum().backward()
    assert torch.isfinite(field.encoding.planes.grad).all() and field.encoding.planes.grad.abs().sum() > 0


def test_training_render_has_gradients_and_regulariser_inputs():
    torch.manual_seed(0)
    field = NeRFField(TriplaneEncoding(resolution=16, channels=4))
    camera = _front_camera(8)
    material = ShadingAugmentation(probabilities=(0.0, 1.0, 0.0))
    out = VolumeRenderer(n_samples=16)(field, material, SolidBackground(), camera, material.sample_shading(camera, True), training=True)
    assert out["rgb"].shape == (1, 8, 8, 3) and out["normal"].shape == (1, 8, 8, 3)
    assert out["sample_weights"].shape[0] == out["sample_normals"].shape[0] == out["sample_directions"].shape[0]
    out["rgb"].mean().backward()
    assert field.encoding.planes.grad.abs().sum() > 0


def test_materials_and_backgrounds():
    camera = _front_camera(4)
    material = ShadingAugmentation(probabilities=(0.0, 0.0, 1.0), seed=2)
    shading = material.sample_shading(camera, True)
    assert shading.mode == "textureless"
    shading.light_positions = torch.tensor([[3.0, 0.0, 0.0]])
    directions = torch.tensor([[-1.0, 0.0, 0.0]])
    colour = material.shade(torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]]), torch.zeros(1, 3), directions, shading, torch.tensor([0]))
    torch.testing.assert_close(colour, torch.ones(1, 3))  # white, fully lit
    eval_shading = material.sample_shading(camera, False)
    assert eval_shading.mode == "lambertian"
    directions = torch.nn.functional.normalize(torch.randn(2, 4, 4, 3), dim=-1)
    random_bg = RandomSolidBackground(seed=0)
    train_bg = random_bg(directions, True)
    assert not torch.allclose(train_bg[0], train_bg[1])
    torch.testing.assert_close(random_bg(directions, False), torch.ones(2, 4, 4, 3))


def test_mlp_background_is_a_learnable_function_of_the_direction():
    """Same direction, same colour (in any image, training or not); other directions, other
    colours; and the colour trains the MLP."""
    torch.manual_seed(0)
    background = MLPBackground()
    directions = torch.nn.functional.normalize(torch.randn(2, 4, 4, 3), dim=-1)
    directions[1, 0, 0] = directions[0, 2, 3]  # one direction seen in two images
    colours = background(directions, True)
    assert colours.shape == (2, 4, 4, 3)
    assert torch.equal(background(directions, True), colours) and torch.equal(background(directions, False), colours)
    torch.testing.assert_close(background(directions[1:], True), colours[1:])
    torch.testing.assert_close(colours[1, 0, 0], colours[0, 2, 3])
    pixels = colours.view(-1, 3)
    gaps = (pixels[:, None] - pixels[None]).abs().amax(-1)  # between every two pixels
    distinct = (directions.view(-1, 3)[:, None] != directions.view(-1, 3)[None]).any(-1)
    assert distinct.sum() == 32 * 31 - 2 and (gaps[distinct] > 1e-4).all()
    colours.square().sum().backward()
    assert all(parameter.grad is not None and parameter.grad.abs().sum() > 0 for parameter in background.parameters())


def test_normal_and_depth_maps_of_a_dense_ball_match_the_analytic_sphere():
    """What a normal-depth prior sees of a NeRF: on a near-opaque ball, each covered pixel's
    normal-map colour and depth-map value are those of the ray's hit on the sphere (the DMTet
    renderer's and the world's conventions), from any orbit camera; the background is white and 0."""
    radius = 0.5
    cameras = CameraBatch.from_orbit(torch.tensor([0.0, 30.0]), torch.tensor([0.0, 120.0]), torch.tensor([3.0, 2.5]), torch.tensor([40.0, 40.0]), 24)
    renderer = VolumeRenderer(n_samples=256)
    material = DiffuseMaterial()
    maps = renderer(ConstantBall(sigma=500.0, radius=radius), material, SolidBackground(), cameras, material.sample_shading(cameras, False), training=True)
    origins, directions = cameras.rays()
    b = (origins * directions).sum(-1)
    c = (origins * origins).sum(-1) - radius**2
    hit = b * b - c > 0
    t = -b - (b * b - c).clamp(min=0).sqrt()
    points = origins + t[..., None] * directions
    normals = camera_space_normals(torch.nn.functional.normalize(points, dim=-1), cameras)
    forward = -cameras.c2w[:, :3, 2]
    axis_depth = ((points - origins) * forward[:, None, None]).sum(-1)
    centre_depth = (cameras.position * cameras.c2w[:, :3, 2]).sum(-1)
    expected_depth = 0.5 + (centre_depth[:, None, None] - axis_depth) / 2.0
    covered = maps["opacity"][..., 0] > 0.999
    assert covered.sum() > 100 and torch.equal(covered, covered & hit)
    torch.testing.assert_close(maps["normal_map"][covered], ((normals + 1) / 2)[covered], atol=0.03, rtol=0)
    torch.testing.assert_close(maps["depth_map"][..., 0][covered], expected_depth[covered], atol=0.01, rtol=0)
    empty = maps["opacity"][..., 0] == 0
    assert empty.any() and torch.equal(maps["normal_map"][empty], torch.ones(int(empty.sum()), 3)) and (maps["depth_map"][empty] == 0).all()
