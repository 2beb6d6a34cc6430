"""Gaussians -> UV-textured mesh (DreamGaussian's stage boundary).

The Gaussians' density field d(x) = sum_i alpha_i exp(-1/2 (x - mu_i)^T Sigma_i^-1 (x - mu_i)) is
sampled on a grid, meshed by marching cubes, cleaned of floaters, decimated, UV-unwrapped (xatlas)
and textured by back-projecting renders of the Gaussians from rings of views. Given the light the
renders' colours hold (`light`: the prior's images were lit by it), the bake divides it out, so
the texture holds albedo.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch

from framework.cameras.camera import CameraBatch
from framework.cameras.distribution import orbit_ring
from framework.export.marching_cubes import decimate, mesh_from_grid, remove_floaters
from framework.export.texture_bake import bake_texture, unwrap_uv
from framework.representations.gaussians import GaussianModel
from framework.representations.lights import CameraLight
from framework.representations.textured_mesh import TexturedMesh


def bake_cameras(elevations_deg: Sequence[float], views_per_ring: int, resolution: int, distance: float = 2.8, fovy_deg: float = 42.0) -> CameraBatch:
    """Rings of views around the object (each ring offset by half a step so seams differ)."""
    rings = [
        orbit_ring(views_per_ring, elevation, distance, fovy_deg, resolution, start_azimuth_deg=i * 180.0 / views_per_ring)
        for i, elevation in enumerate(elevations_deg)
    ]
    return CameraBatch.cat(rings)


class GaussiansToTexturedMesh:
    """Args:
    target: the name of the representation it makes.
    density_threshold: iso-level of d(x) taken as the surface.
    grid_resolution: marching-cubes samples per axis over [-1, 1]^3.
    target_faces: decimation target.
    min_component_fraction: floaters smaller than this fraction of the main body are dropped.
    texture_size: side of the square UV texture.
    bake_resolution: resolution of the renders that are back-projected.
    bake_elevations_deg, bake_views_per_ring: the rings of baking views.
    optimize_vertices: the mesh learns vertex offsets too.
    light: the light the renders' colours hold, divided out by the bake; None keeps them.
    """

    def __init__(
        self,
        target: str = "mesh",
        density_threshold: float = 0.2,
        grid_resolution: int = 96,
        target_faces: int = 4000,
        min_component_fraction: float = 0.05,
        texture_size: int = 256,
        bake_resolution: int = 128,
        bake_elevations_deg: Sequence[float] = (-10.0, 20.0, 50.0, 80.0),
        bake_views_per_ring: int = 8,
        optimize_vertices: bool = False,
        light: CameraLight | None = None,
    ) -> None:
        self.target = target
        self.density_threshold = density_threshold
        self.grid_resolution = grid_resolution
        self.target_faces = target_faces
        self.min_component_fraction = min_component_fraction
        self.texture_size = texture_size
        self.bake_resolution = bake_resolution
        self.bake_elevations_deg = tuple(bake_elevations_deg)
        self.bake_views_per_ring = bake_views_per_ring
        self.optimize_vertices = optimize_vertices
        self.light = light

    @torch.no_grad()
    def __call__(self, source: GaussianModel, render: Callable[[CameraBatch], dict]) -> TexturedMesh:
        grid = source.density_grid(self.grid_resolution).cpu().numpy()
        try:
            vertices, faces = mesh_from_grid(grid, self.density_threshold)
        except ValueError as error:
            raise ValueError(f"Gaussians -> mesh: {error} (lower the conversion's density_threshold?)") from None
        vertices, faces = remove_floaters(vertices, faces, self.min_component_fraction)
        vertices, faces = decimate(vertices, faces, self.target_faces)
        vertices, faces, uv, _ = unwrap_uv(torch.from_numpy(vertices), torch.from_numpy(faces))
        cameras = bake_cameras(self.bake_elevations_deg, self.bake_views_per_ring, self.bake_resolution).to(source.means.device)
        renders = [render(cameras.subset(slice(i, i + 8))) for i in range(0, cameras.batch_size, 8)]
        images = torch.cat([r["rgb"] for r in renders])
        masks = torch.cat([r["opacity"][..., 0] for r in renders]) > 0.5
        texture, _ = bake_texture(vertices, faces, uv, cameras, images, masks, texture_size=self.texture_size, light=self.light)
        return TexturedMesh(vertices, faces, uv, texture, optimize_vertices=self.optimize_vertices)

    def placeholder(self, shape_state: Mapping[str, Any], source: GaussianModel | None = None) -> TexturedMesh:
        return TexturedMesh.empty(**shape_state)
