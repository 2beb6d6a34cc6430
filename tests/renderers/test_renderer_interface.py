"""One renderer interface: volume, splatting and mesh renderers take the same arguments and
return rgb, opacity, depth and normal (and albedo where the material has one), all [B, H, W, C];
materials receive each sample's view direction."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import trimesh

from framework.cameras.camera import CameraBatch
from framework.renderers.gaussian import GaussianRenderer
from framework.renderers.textured_mesh import TexturedMeshRenderer
from framework.renderers.volume import VolumeRenderer
from framework.representations.background import SolidBackground
from framework.representations.encodings import TriplaneEncoding
from framework.representations.gaussians import GaussianModel
from framework.representations.materials import DiffuseMaterial, Shading
from framework.representations.nerf import NeRFField
from framework.representations.textured_mesh import TexturedMesh


class RecordingMaterial(DiffuseMaterial):
    """Unlit, and keeps what `shade` was given."""

    requires_normals = True

    def shade(self, albedo, normals, points, directions, shading, image_index):
        self.seen = (points, directions, image_index)
        return albedo


def _cameras() -> CameraBatch:
    return CameraBatch.from_orbit(torch.tensor([10.0, 30.0]), torch.tensor([0.0, 120.0]), torch.tensor([2.8, 2.8]), torch.tensor([42.0, 42.0]), 12)


def _sphere_mesh() -> TexturedMesh:
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.6)
    vertices = torch.tensor(sphere.vertices, dtype=torch.float32)
    uv = (vertices[:, :2] * 0.5 + 0.5).clamp(0, 1)
    return TexturedMesh(vertices, torch.tensor(sphere.faces), uv, torch.full((8, 8, 3), 0.3))


def _gaussians() -> GaussianModel:
    return GaussianModel(n_init=200, init_opacity=0.9, init_radius=0.5, seed=0)


@pytest.mark.parametrize("kind", ["volume", "gaussian", "mesh"])
def test_every_renderer_takes_the_same_arguments_and_returns_the_same_maps(kind):
    torch.manual_seed(0)
    renderer, representation = {
        "volume": (VolumeRenderer(n_samples=8), NeRFField(TriplaneEncoding(resolution=8, channels=2))),
        "gaussian": (GaussianRenderer(backend="torch"), _gaussians()),
        "mesh": (TexturedMeshRenderer(backend="torch"), _sphere_mesh()),
    }[kind]
    cameras = _cameras()
    material = RecordingMaterial()
    shading = material.sample_shading(cameras, True)
    renderer.update(representation, 0)
    render = renderer(representation, material, SolidBackground(), cameras, shading, True)
    expected = {"rgb": 3, "opacity": 1, "depth": 1, "normal": 3} | ({"albedo": 3} if kind != "gaussian" else {})
    for key, channels in expected.items():
        assert render[key].shape == (2, 12, 12, channels), key
        assert torch.isfinite(render[key]).all(), key
    covered = render["opacity"][..., 0] > 0.5
    assert covered.any() and (~covered).any()
    lengths = render["normal"][covered].norm(dim=-1)
    if kind == "volume":  # composited along the ray: an average of unit normals
        assert ((lengths > 0.1) & (lengths <= 1.0 + 1e-4)).all()
    else:
        assert torch.allclose(lengths, torch.ones(len(lengths)), atol=1e-3), "unit normals where the object is"
    if kind == "gaussian":
        return  # Gaussians carry their colour: no material is applied
    points, directions, image_index = material.seen
    assert torch.allclose(directions.norm(dim=-1), torch.ones(len(directions)), atol=1e-5)
    # Each sample's direction is the ray from its image's camera towards the sample.
    on_surface = points.norm(dim=-1) > 0  # mesh pixels off the mesh have no point
    towards = F.normalize(points - cameras.position[image_index], dim=-1)[on_surface]
    assert on_surface.sum() > 20 and torch.allclose((towards * directions[on_surface]).sum(-1), torch.ones(int(on_surface.sum())), atol=1e-3)
    assert set(image_index.tolist()) == {0, 1}


def test_mesh_normals_face_the_camera_and_follow_the_sphere():
    cameras = _cameras()
    material = DiffuseMaterial()
    render = TexturedMeshRenderer(backend="torch")(_sphere_mesh(), material, SolidBackground(), cameras, Shading("albedo", cameras.position), False)
    covered = render["opacity"][..., 0] > 0.99
    _, directions = cameras.rays()
    assert ((render["normal"] * directions).sum(-1)[covered] < 0).all()
