"""Exporters: each writes one representation of a finished system into the run's `export/`.

An exporter is a callable `exporter(system) -> [paths written]`; it asks the system for its
representation by name (`representation_named`, which runs a later stage's conversion when the
run stopped before it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from framework.export.gaussian_ply import write_gaussian_ply
from framework.export.density_level import check_threshold
from framework.export.marching_cubes import field_surface_level, mesh_from_grid, remove_floaters, sample_grid
from framework.export.mesh_io import write_glb, write_obj
from framework.export.pbr_bake import bake_field_textures, write_pbr_mesh
from framework.export.texture_bake import write_textured_mesh
from framework.representations.lights import CameraLight


class Exporter(Protocol):
    def __call__(self, system: Any) -> list[Path]: ...


class DensityMesh:
    """Marching cubes on a field's density, coloured by its albedo at the vertices (`model.glb`,
    `model.obj`). The field offers `density(points [N, 3]) -> [N]` and `forward(points) ->
    (density [N], albedo [N, 3])`.

    Args:
        export_dir: the run's `export/` folder.
        representation: the name of the field.
        threshold: density level of the surface, "auto": the level whose silhouettes match the
            field's rendered ones, or "shape": the level whose inside has the volume of the shape
            the field started from (`framework.export.density_level`).
        resolution: marching-cubes grid size over [-1, 1]^3.
        min_component_fraction: drop floaters smaller than this fraction of the largest piece.
    """

    def __init__(self, export_dir: str | Path, representation: str = "main", threshold: float | str = "auto", resolution: int = 128, min_component_fraction: float = 0.05) -> None:
        self.export_dir = Path(export_dir)
        self.representation = representation
        self.threshold = check_threshold(threshold)
        self.resolution = resolution
        self.min_component_fraction = min_component_fraction

    @torch.no_grad()
    def __call__(self, system: Any) -> list[Path]:
        field = system.representation_named(self.representation)
        density = sample_grid(field.density, self.resolution, device=system.device)
        vertices, faces = mesh_from_grid(density, field_surface_level(field, density, self.threshold, device=system.device))
        vertices, faces = remove_floaters(vertices, faces, self.min_component_fraction)
        points = torch.from_numpy(vertices).to(system.device)
        colours = np.clip(torch.cat([field(chunk)[1] for chunk in points.split(65536)]).cpu().numpy(), 0.0, 1.0)
        glb, obj = self.export_dir / "model.glb", self.export_dir / "model.obj"
        write_glb(glb, vertices, faces, vertex_colors=colours)
        write_obj(obj, vertices, faces, vertex_colors=colours)
        return [glb, obj]


class GaussianPly:
    """The Gaussians as `gaussians.ply` in the standard 3DGS layout."""

    def __init__(self, export_dir: str | Path, representation: str = "main") -> None:
        self.export_dir = Path(export_dir)
        self.representation = representation

    def __call__(self, system: Any) -> list[Path]:
        path = self.export_dir / "gaussians.ply"
        write_gaussian_ply(path, system.representation_named(self.representation))
        return [path]


class TexturedMeshFiles:
    """A UV-textured mesh as `model.obj` (+ `.mtl` + texture PNG) and `model.glb`.

    Args:
        export_dir: the run's `export/` folder.
        representation: the name of the `TexturedMesh`, or of what `convert` makes one of.
        light: the light its texture was made under; None means the texture holds lit colours
            (a prior with an unknown light), so the GLB is marked unlit for viewers.
        convert: a conversion (e.g. `GaussiansToTexturedMesh`) run on `representation` as the
            last stage renders it, for a method whose stages never make a mesh (GSGEN).
    """

    def __init__(self, export_dir: str | Path, representation: str = "mesh", light: CameraLight | None = None, convert: Any = None) -> None:
        self.export_dir = Path(export_dir)
        self.representation = representation
        self.light = light
        self.convert = convert

    @torch.no_grad()
    def __call__(self, system: Any) -> list[Path]:
        mesh = system.representation_named(self.representation)
        if self.convert is not None:
            mesh = self.convert(mesh, lambda cameras: system.render(cameras, training=False))
        paths = write_textured_mesh(self.export_dir, mesh.positions(), mesh.faces, mesh.uv, mesh.albedo(), unlit=self.light is None)
        return list(paths.values())


class PBRMeshFiles:
    """A surface with its PBR material baked into UV maps, as `model.glb` (glTF
    metallic-roughness) and `model.obj` (+ `.mtl` + one PNG per map).

    The representation offers `surface() -> (vertices [M, 3], faces [F, 3])`; the material
    `system.materials[material]` offers `textures(points [N, 3])` -> `albedo`, `roughness`,
    `metallic` (see `bake_field_textures`).

    Args:
        export_dir: the run's `export/` folder.
        representation: the name of the surface's representation.
        material: the name of the PBR material.
        texture_size: resolution of the baked maps.
        min_component_fraction: drop pieces smaller than this fraction of the largest (a DMTet
            under SDS leaves flakes of a few triangles beside its surface).
    """

    def __init__(self, export_dir: str | Path, representation: str = "main", material: str = "main", texture_size: int = 512, min_component_fraction: float = 0.05) -> None:
        self.export_dir = Path(export_dir)
        self.representation = representation
        self.material = material
        self.texture_size = texture_size
        self.min_component_fraction = min_component_fraction

    @torch.no_grad()
    def __call__(self, system: Any) -> list[Path]:
        vertices, faces = _without_floaters(*system.representation_named(self.representation).surface(), self.min_component_fraction)
        baked = bake_field_textures(vertices, faces, system.materials[self.material].textures, self.texture_size)
        return list(write_pbr_mesh(self.export_dir, *baked).values())


class SurfaceMeshFiles:
    """A surface with its representation's colour field baked into a UV albedo texture
    (`model.glb`, `model.obj` + `.mtl` + `model_albedo.png`): Magic3D's DMTet, whose colour the
    fine stage trained. The representation offers `surface()` and `albedo(points [N, 3])`.

    Args:
        export_dir: the run's `export/` folder.
        representation: the name of the surface's representation.
        texture_size: resolution of the baked texture.
        min_component_fraction: drop pieces smaller than this fraction of the largest.
    """

    def __init__(self, export_dir: str | Path, representation: str = "main", texture_size: int = 512, min_component_fraction: float = 0.05) -> None:
        self.export_dir = Path(export_dir)
        self.representation = representation
        self.texture_size = texture_size
        self.min_component_fraction = min_component_fraction

    @torch.no_grad()
    def __call__(self, system: Any) -> list[Path]:
        surface = system.representation_named(self.representation)
        vertices, faces = _without_floaters(*surface.surface(), self.min_component_fraction)
        vertices, faces, uv, maps = bake_field_textures(
            vertices, faces, lambda points: {"albedo": surface.albedo(points)}, self.texture_size, fields={"albedo": "albedo"}
        )
        return list(write_textured_mesh(self.export_dir, vertices, faces, uv, maps["albedo"]).values())


def _without_floaters(vertices: torch.Tensor, faces: torch.Tensor, min_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A surface [V, 3], [F, 3] without its pieces smaller than `min_fraction` of the largest,
    on the surface's device."""
    kept_vertices, kept_faces = remove_floaters(vertices.detach().cpu().numpy(), faces.cpu().numpy(), min_fraction)
    return torch.from_numpy(kept_vertices).to(vertices), torch.from_numpy(kept_faces).to(faces.device)
