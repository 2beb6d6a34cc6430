"""Export the representation as a vertex-coloured mesh (GLB + OBJ) when training ends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from framework.export.marching_cubes import extract_mesh, remove_floaters
from framework.export.mesh_io import write_glb, write_obj


class DensityMeshExport(pl.Callback):
    """Marching cubes on the representation's density, coloured by its albedo at the vertices.

    The representation must offer `density(points [N, 3]) -> [N]` and
    `forward(points) -> (density [N], albedo [N, 3])`.

    Args:
        export_dir: the run's `export/` folder.
        threshold: density level of the surface.
        resolution: marching-cubes grid size over [-1, 1]^3.
        min_component_fraction: drop floaters smaller than this fraction of the largest piece.
    """

    def __init__(self, export_dir: str | Path, threshold: float = 5.0, resolution: int = 128, min_component_fraction: float = 0.05) -> None:
        self.export_dir = Path(export_dir)
        self.threshold = threshold
        self.resolution = resolution
        self.min_component_fraction = min_component_fraction

    @torch.no_grad()
    def export(self, representation: torch.nn.Module, device: torch.device) -> Path:
        vertices, faces = extract_mesh(representation.density, self.threshold, self.resolution, device=device)
        vertices, faces = remove_floaters(vertices, faces, self.min_component_fraction)
        points = torch.from_numpy(vertices).to(device)
        colours = torch.cat([representation(chunk)[1] for chunk in points.split(65536)]).cpu().numpy()
        colours = np.clip(colours, 0.0, 1.0)
        glb = self.export_dir / "model.glb"
        write_glb(glb, vertices, faces, vertex_colors=colours)
        write_obj(self.export_dir / "model.obj", vertices, faces, vertex_colors=colours)
        return glb

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        glb = self.export(pl_module.representation, pl_module.device)
        for logger in trainer.loggers:
            if isinstance(logger, pl.loggers.WandbLogger):
                import wandb

                logger.experiment.log({"model": wandb.Object3D(str(glb))}, step=trainer.global_step)
