"""DMTet: a deformable tetrahedral grid whose SDF is meshed by marching tetrahedra every step.

The grid is generated in code (`cube_tetrahedra`). Its SDF and per-vertex deformation come from a
field (an encoding such as a triplane or hash grid, plus a small MLP) or are per-vertex
parameters. The mesh's vertices are the SDF's zero crossings on the deformed grid's edges, so
gradients of anything rendered from the mesh reach the SDF and the deformation (Shen et al. 2021;
Magic3D and Fantasia3D build on it).

The initial shape is fitted at construction: a sphere or an ellipsoid, a user's mesh, a signed
distance such as a point-cloud prior's answer to the prompt (`init="shape"`), or nothing
(`init="none"`: a placeholder a checkpoint is loaded into, or a conversion's target that sets
the SDF itself with `fit_sdf`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from framework.representations.marching_tetrahedra import marching_tetrahedra
from framework.representations.mesh_sdf import mesh_occupancy, sdf_from_occupancy
from framework.representations.nerf import _mlp
from framework.representations.tetrahedral_grid import cube_tetrahedra, tet_edges

INITS = ("ellipsoid", "mesh", "shape", "none")


def ellipsoid_sdf(points: Tensor, radii: Sequence[float]) -> Tensor:
    """[N] an approximate SDF of the axis-aligned ellipsoid with semi-axes `radii` (exact on the
    surface and for a sphere; its sign is exact everywhere)."""
    radii_t = torch.as_tensor(radii, dtype=points.dtype, device=points.device)
    return (points / radii_t).norm(dim=-1).sub(1.0) * radii_t.min()


class DMTet(nn.Module):
    """Args:
    resolution: cubes per side of the tetrahedral grid (32 on CPU, 64 or 128 on GPU).
    scale: the grid spans [-scale, scale]^3.
    encoding: a field's encoding (points [N, 3] -> [N, out_dim]); None: the SDF and the
        deformation are per-vertex parameters.
    hidden, n_hidden_layers: the field's MLP (SDF and deformation from one head).
    deformation_limit: the largest vertex offset, in grid cells (0: the grid stays regular).
    init: "ellipsoid" (Fantasia3D's default; a sphere when the radii are equal), "mesh" (the
        closed mesh at `init_path`, e.g. a user's rough model), "shape" (the signed distance
        `init_shape`) or "none".
    init_radii: the ellipsoid's semi-axes along x, y, z.
    init_path: the mesh file for `init="mesh"` (a closed GLB or OBJ, +y up as glTF has it, like
        the project's own exports); it is centred and scaled to `init_mesh_radius`.
    init_mesh_radius: the radius of the user mesh's bounding sphere once placed in the grid.
    init_shape: for `init="shape"`, points [N, 3] -> signed distance [N] (negative inside), e.g.
        `framework.representations.point_prior_shape.PointPriorShape`.
    init_fit_steps: Adam steps that fit a field's SDF to the initial shape.
    colour: a module giving albedo [N, 3] at points [N, 3] through `albedo(points)` (Magic3D
        carries the NeRF's field over); None: white (the material has its own, Fantasia3D).
    seed: of the field's MLP initialisation and of the initial fit's point jitter.
    """

    def __init__(
        self,
        resolution: int = 32,
        scale: float = 1.0,
        encoding: nn.Module | None = None,
        hidden: int = 64,
        n_hidden_layers: int = 1,
        deformation_limit: float = 0.25,
        init: str = "ellipsoid",
        init_radii: Sequence[float] = (0.5, 0.5, 0.5),
        init_path: str | None = None,
        init_mesh_radius: float = 0.6,
        init_shape: Callable[[Tensor], Tensor] | None = None,
        init_fit_steps: int = 200,
        colour: nn.Module | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise ValueError(f"DMTet init={init!r}: must be one of {INITS}")
        if deformation_limit < 0:
            raise ValueError(f"DMTet deformation_limit={deformation_limit}: must be >= 0")
        grid, tets = cube_tetrahedra(resolution, scale)
        # Rebuilt from `resolution` and `scale`: not stored in checkpoints.
        self.register_buffer("grid", grid, persistent=False)
        self.register_buffer("tets", tets, persistent=False)
        self.register_buffer("edges", tet_edges(tets), persistent=False)
        self.resolution = resolution
        self.scale = scale
        self.max_offset = deformation_limit * 2.0 * scale / resolution
        self.encoding = encoding
        if encoding is not None:
            # Seeded here, not from the global RNG: a conversion makes this DMTet mid-run, where
            # a resumed run's global RNG differs from an uninterrupted one's.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.head = _mlp(encoding.out_dim, hidden, n_hidden_layers, 4)
            self.vertex_sdf = None
            self.vertex_deformation = None
        else:
            self.head = None
            self.vertex_sdf = nn.Parameter(torch.zeros(grid.shape[0]))
            self.vertex_deformation = nn.Parameter(torch.zeros(grid.shape[0], 3))
        self.colour = colour
        initial: Callable[[Tensor], Tensor] | None = None
        if init == "ellipsoid":
            initial = lambda points: ellipsoid_sdf(points, init_radii)  # noqa: E731
        elif init == "mesh":
            if init_path is None:
                raise ValueError("DMTet init='mesh' needs init_path=<a mesh file>")
            vertices, faces = load_user_mesh(init_path, init_mesh_radius)
            initial = sdf_from_occupancy(mesh_occupancy(vertices, faces, bound=scale), bound=scale)
        elif init == "shape":
            if init_shape is None:
                raise ValueError("DMTet init='shape' needs init_shape=<a signed distance>, e.g. +shape@representation.init_shape=point_prior")
            initial = init_shape
        # The initial shape's SDF at the grid vertices, for `InitialShapeHold`; rebuilt at
        # construction (a resumed run builds the same one), so not stored in checkpoints.
        self.register_buffer("initial_sdf", None, persistent=False)
        if initial is not None:
            self.initial_sdf = self.fit_sdf(initial, init_fit_steps, seed)

    def shape_state(self) -> dict[str, object]:
        """What checkpoints record: the grid, which the state dict does not hold."""
        return {"resolution": self.resolution, "scale": self.scale}

    def load_shape_state(self, state: dict[str, object]) -> None:
        if (state["resolution"], state["scale"]) != (self.resolution, self.scale):
            raise ValueError(
                f"the checkpoint's DMTet grid has resolution {state['resolution']} and scale {state['scale']}, "
                f"this run's {self.resolution} and {self.scale}: set representation.resolution / scale to match"
            )

    # --- the field --------------------------------------------------------------------------------
    def sdf_and_deformation(self) -> tuple[Tensor, Tensor]:
        """SDF [V] and raw deformation [V, 3] at the grid's vertices."""
        if self.head is None:
            return self.vertex_sdf, self.vertex_deformation
        out = self.head(self.encoding(self.grid))
        return out[:, 0], out[:, 1:]

    def deformed_grid(self, deformation: Tensor) -> Tensor:
        """[V, 3] grid vertices moved by at most `max_offset` along each axis."""
        return self.grid + self.max_offset * torch.tanh(deformation)

    def surface(self) -> tuple[Tensor, Tensor]:
        """The current mesh: vertices [M, 3] (differentiable) and faces [F, 3], counter-clockwise
        seen from outside."""
        return self.surface_with_sdf()[:2]

    def surface_with_sdf(self) -> tuple[Tensor, Tensor, Tensor]:
        """The mesh, and the grid's SDF [V] it was made from (for the SDF regularisers)."""
        sdf, deformation = self.sdf_and_deformation()
        vertices, faces = marching_tetrahedra(self.deformed_grid(deformation), self.tets, sdf)
        return vertices, faces, sdf

    def albedo(self, points: Tensor) -> Tensor:
        """[N, 3] albedo at surface points: the colour module's, or white without one."""
        if self.colour is None:
            return torch.ones_like(points)
        return self.colour.albedo(points)

    @torch.enable_grad()
    def fit_sdf(self, target: Callable[[Tensor], Tensor], steps: int, seed: int = 0, lr: float = 0.01, points_per_step: int = 8192) -> Tensor:
        """Make the SDF match `target` (points [N, 3] -> SDF [N]) and reset the deformation:
        per-vertex parameters are set, a field is fitted by `steps` Adam steps, each on
        `points_per_step` grid vertices jittered within a cell (weighted towards the surface,
        where the sign decides the mesh). Returns the target at the grid's vertices [V]."""
        with torch.no_grad():
            target_at_grid = target(self.grid).float()
        if self.head is None:
            with torch.no_grad():
                self.vertex_sdf.copy_(target_at_grid)
                self.vertex_deformation.zero_()
            return target_at_grid
        generator = torch.Generator().manual_seed(seed)
        jitter_scale = self.scale / self.resolution
        parameters = [*self.encoding.parameters(), *self.head.parameters()]
        optimizer = torch.optim.Adam(parameters, lr=lr)
        for _ in range(steps):
            rows = torch.randint(self.grid.shape[0], (min(points_per_step, self.grid.shape[0]),), generator=generator)
            jitter = (torch.rand(len(rows), 3, generator=generator) * 2 - 1).to(self.grid) * jitter_scale
            points = self.grid[rows.to(self.grid.device)] + jitter
            with torch.no_grad():
                wanted = target(points).float()
            out = self.head(self.encoding(points))
            near_surface = 1.0 + 10.0 * (wanted.abs() < 2 * jitter_scale).float()
            loss = (near_surface * (out[:, 0] - wanted) ** 2).mean() + 1e-2 * (out[:, 1:] ** 2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return target_at_grid


def load_user_mesh(path: str | Path, radius: float) -> tuple[Tensor, Tensor]:
    """Vertices [V, 3] (z-up, bounding box centred, bounding sphere of `radius`) and faces
    [F, 3] of a mesh file; errors name the file."""
    from framework.export.mesh_io import load_mesh_zup

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"DMTet init_path={str(path)!r}: no such file")
    try:
        mesh = load_mesh_zup(path)
    except Exception as error:  # trimesh raises many types for unreadable files
        raise ValueError(f"DMTet init_path={str(path)!r}: cannot read it as a mesh ({error})") from None
    if len(mesh.faces) == 0:
        raise ValueError(f"DMTet init_path={str(path)!r}: the mesh has no faces")
    vertices = torch.tensor(mesh.vertices, dtype=torch.float32)
    vertices = vertices - (vertices.min(0).values + vertices.max(0).values) / 2
    vertices = vertices * radius / vertices.norm(dim=-1).max().clamp(min=1e-8)
    return vertices, torch.tensor(mesh.faces, dtype=torch.long)

