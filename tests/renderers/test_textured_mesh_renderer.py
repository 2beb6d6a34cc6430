"""framework.renderers.textured_mesh: DreamGaussian's stage-2 renders, unlit and under the
world's camera light (`LitMaterial(CameraLight())`)."""

from __future__ import annotations

import torch
import trimesh

from bundled.evaluation.metrics import color_error, mask_iou
from bundled.world.objects import COLOURS, OBJECTS
from bundled.world.render import render_object
from framework.cameras.distribution import orbit_ring
from framework.renderers.textured_mesh import TexturedMeshRenderer
from framework.representations.background import SolidBackground
from framework.representations.lights import CameraLight
from framework.representations.materials import DiffuseMaterial, LitMaterial
from framework.representations.textured_mesh import TexturedMesh


def _sphere_of_one_colour(colour: tuple[float, float, float]) -> TexturedMesh:
    """The world's sphere (radius 0.62) as a UV mesh whose whole texture is `colour`."""
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.62)
    vertices = torch.as_tensor(sphere.vertices, dtype=torch.float32)
    uv = torch.rand(vertices.shape[0], 2)  # any UVs: the texture is uniform
    texture = torch.tensor(colour).expand(8, 8, 3).clone()
    return TexturedMesh(vertices, torch.as_tensor(sphere.faces, dtype=torch.long), uv, texture, optimize_vertices=True)


def _render(renderer, mesh, material, cameras):
    return renderer(mesh, material, SolidBackground(), cameras, material.sample_shading(cameras, False), False)


def test_lit_render_of_an_albedo_texture_matches_the_world_and_unlit_shows_the_texture():
    cameras = orbit_ring(4, 30.0, 2.8, 42.0, 64, start_azimuth_deg=10.0)
    mesh = _sphere_of_one_colour(COLOURS["yellow"])
    renderer = TexturedMeshRenderer("torch")
    lit = _render(renderer, mesh, LitMaterial(CameraLight()), cameras)
    true_rgb, true_mask = render_object(OBJECTS["sphere"], "yellow", cameras)
    mask = lit["opacity"][..., 0]
    assert (mask_iou(mask, true_mask) > 0.97).all()
    assert (color_error(lit["rgb"], true_rgb, mask, true_mask) < 0.02).all()
    inside = mask > 0.99
    yellow = torch.tensor(COLOURS["yellow"])
    # Unlit is the texture as it is, whether by a light-less LitMaterial or a DiffuseMaterial.
    for unlit_material in (LitMaterial(None), DiffuseMaterial()):
        unlit = _render(renderer, mesh, unlit_material, cameras)
        assert torch.allclose(unlit["rgb"][inside], yellow, atol=1e-5)
        torch.testing.assert_close(unlit["opacity"], lit["opacity"])
    # The render dict of the one renderer interface: [B, H, W, C] maps; albedo is the texture
    # (lit or not), normals are unit and face the camera where the mesh is drawn.
    B, H, W = 4, 64, 64
    assert lit["rgb"].shape == (B, H, W, 3) and lit["opacity"].shape == lit["depth"].shape == (B, H, W, 1)
    assert lit["normal"].shape == lit["albedo"].shape == (B, H, W, 3)
    assert torch.allclose(lit["albedo"][inside], yellow, atol=1e-5)
    covered = lit["normal"].norm(dim=-1) > 0
    assert torch.allclose(lit["normal"][covered].norm(dim=-1), torch.ones(()), atol=1e-4)
    _, directions = cameras.rays()
    assert ((lit["normal"] * directions).sum(-1)[inside] < 0).all()
    # Shading depends on the geometry: the lit render's gradient reaches the vertices.
    lit["rgb"].sum().backward()
    assert mesh.vertex_offsets.grad.abs().sum() > 0 and mesh.texture.grad.abs().sum() > 0
