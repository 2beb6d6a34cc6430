"""framework.renderers.textured_mesh: DreamGaussian's stage-2 renders, unlit and world-lit."""

from __future__ import annotations

import torch
import trimesh

from framework.cameras.distribution import orbit_ring
from framework.evaluation.metrics import color_error, mask_iou
from framework.renderers.textured_mesh import TexturedMeshRenderer
from framework.representations.background import SolidBackground
from framework.representations.textured_mesh import TexturedMesh
from framework.world.objects import COLOURS, OBJECTS
from framework.world.render import render_object


def _sphere_of_one_colour(colour: tuple[float, float, float]) -> TexturedMesh:
    """The world's sphere (radius 0.62) as a UV mesh whose whole texture is `colour`."""
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.62)
    vertices = torch.as_tensor(sphere.vertices, dtype=torch.float32)
    uv = torch.rand(vertices.shape[0], 2)  # any UVs: the texture is uniform
    texture = torch.tensor(colour).expand(8, 8, 3).clone()
    return TexturedMesh(vertices, torch.as_tensor(sphere.faces, dtype=torch.long), uv, texture, optimize_vertices=True)


def test_lit_render_of_an_albedo_texture_matches_the_world_and_unlit_shows_the_texture():
    cameras = orbit_ring(4, 30.0, 2.8, 42.0, 64, start_azimuth_deg=10.0)
    mesh = _sphere_of_one_colour(COLOURS["yellow"])
    renderer = TexturedMeshRenderer("torch")
    lit = renderer(mesh, SolidBackground(), cameras, training=False, lit=True)
    true_rgb, true_mask = render_object(OBJECTS["sphere"], "yellow", cameras)
    mask = lit["opacity"][..., 0]
    assert (mask_iou(mask, true_mask) > 0.97).all()
    assert (color_error(lit["rgb"], true_rgb, mask, true_mask) < 0.02).all()
    unlit = renderer(mesh, SolidBackground(), cameras, training=False)
    inside = mask > 0.99
    assert torch.allclose(unlit["rgb"][inside], torch.tensor(COLOURS["yellow"]), atol=1e-5)
    # Shading depends on the geometry: the lit render's gradient reaches the vertices.
    lit["rgb"].sum().backward()
    assert mesh.vertex_offsets.grad.abs().sum() > 0 and mesh.texture.grad.abs().sum() > 0
