"""Gaussians -> textured mesh: DreamGaussian's stage switch and the Gaussian run's exports.

At `switch_step` the Gaussians' density field d(x) = sum_i alpha_i exp(-1/2 (x - mu_i)^T
Sigma_i^-1 (x - mu_i)) is sampled on a grid, meshed by marching cubes, cleaned of floaters,
decimated, UV-unwrapped (xatlas) and textured by back-projecting renders of the Gaussians from
rings of views; the system then optimises that texture. When training ends the callback writes
`gaussians.ply`, `model.obj` (+ `.mtl` + texture PNG) and `model.glb`.

The module it drives offers `representation` (a `GaussianModel`), `guidance` (whose `world_light`
says whether to bake albedo), `stage`, `mesh`, `render(cameras, training)` and
`enter_texture_stage(mesh)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pytorch_lightning as pl
import torch

from framework.cameras.camera import CameraBatch
from framework.cameras.distribution import orbit_ring
from framework.export.gaussian_ply import write_gaussian_ply
from framework.export.marching_cubes import decimate, mesh_from_grid, remove_floaters
from framework.export.texture_bake import bake_texture, unwrap_uv, write_textured_mesh
from framework.representations.textured_mesh import TexturedMesh


def bake_cameras(elevations_deg: Sequence[float], views_per_ring: int, resolution: int, distance: float = 2.8, fovy_deg: float = 42.0) -> CameraBatch:
    """Rings of views around the object (each ring offset by half a step so seams differ)."""
    rings = [
        orbit_ring(views_per_ring, elevation, distance, fovy_deg, resolution, start_azimuth_deg=i * 180.0 / views_per_ring)
        for i, elevation in enumerate(elevations_deg)
    ]
    return CameraBatch.cat(rings)


class GaussiansToMesh(pl.Callback):
    """Args:
    switch_step: the first step of the texture stage (a step >= max_steps means no stage 2;
        the mesh is still made for the exports).
    export_dir: the run's `export/` folder.
    density_threshold: iso-level of d(x) taken as the surface.
    grid_resolution: marching-cubes samples per axis over [-1, 1]^3.
    target_faces: decimation target.
    min_component_fraction: floaters smaller than this fraction of the main body are dropped.
    texture_size: side of the square UV texture.
    bake_resolution: resolution of the renders that are back-projected.
    bake_elevations_deg, bake_views_per_ring: the rings of baking views.
    optimize_vertices: let stage 2 move vertices too.
    """

    def __init__(
        self,
        switch_step: int,
        export_dir: str | Path,
        density_threshold: float = 0.2,
        grid_resolution: int = 96,
        target_faces: int = 4000,
        min_component_fraction: float = 0.05,
        texture_size: int = 256,
        bake_resolution: int = 128,
        bake_elevations_deg: Sequence[float] = (-10.0, 20.0, 50.0, 80.0),
        bake_views_per_ring: int = 8,
        optimize_vertices: bool = False,
    ) -> None:
        self.switch_step = switch_step
        self.export_dir = Path(export_dir)
        self.density_threshold = density_threshold
        self.grid_resolution = grid_resolution
        self.target_faces = target_faces
        self.min_component_fraction = min_component_fraction
        self.texture_size = texture_size
        self.bake_resolution = bake_resolution
        self.bake_elevations_deg = tuple(bake_elevations_deg)
        self.bake_views_per_ring = bake_views_per_ring
        self.optimize_vertices = optimize_vertices

    @torch.no_grad()
    def convert(self, pl_module: pl.LightningModule) -> TexturedMesh:
        """The textured mesh of the module's current Gaussians."""
        gaussians = pl_module.representation
        grid = gaussians.density_grid(self.grid_resolution).cpu().numpy()
        try:
            vertices, faces = mesh_from_grid(grid, self.density_threshold)
        except ValueError as error:
            raise ValueError(f"Gaussians -> mesh at step {pl_module.global_step}: {error} (lower callbacks.stages.density_threshold?)") from None
        vertices, faces = remove_floaters(vertices, faces, self.min_component_fraction)
        vertices, faces = decimate(vertices, faces, self.target_faces)
        vertices, faces, uv, _ = unwrap_uv(torch.from_numpy(vertices), torch.from_numpy(faces))
        cameras = bake_cameras(self.bake_elevations_deg, self.bake_views_per_ring, self.bake_resolution).to(pl_module.device)
        renders = [pl_module.render(cameras.subset(slice(i, i + 8)), training=False) for i in range(0, cameras.batch_size, 8)]
        images = torch.cat([r["rgb"] for r in renders])
        masks = torch.cat([r["opacity"][..., 0] for r in renders]) > 0.5
        texture, _ = bake_texture(vertices, faces, uv, cameras, images, masks, texture_size=self.texture_size, delight=pl_module.guidance.world_light)
        return TexturedMesh(vertices, faces, uv, texture, optimize_vertices=self.optimize_vertices)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: object, batch_idx: int) -> None:
        if pl_module.stage == "gaussians" and trainer.global_step >= self.switch_step:
            pl_module.enter_texture_stage(self.convert(pl_module))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        write_gaussian_ply(self.export_dir / "gaussians.ply", pl_module.representation)
        mesh = pl_module.mesh if pl_module.stage == "texture" else self.convert(pl_module)
        # Without the world's light the texture holds the renders' lighting: viewers must not add theirs.
        unlit = not pl_module.guidance.world_light
        paths = write_textured_mesh(self.export_dir, mesh.positions().detach(), mesh.faces, mesh.uv, mesh.albedo().detach(), unlit=unlit)
        for logger in trainer.loggers:
            if isinstance(logger, pl.loggers.WandbLogger):
                import wandb

                logger.experiment.log({"model": wandb.Object3D(str(paths["glb"]))}, step=trainer.global_step)
