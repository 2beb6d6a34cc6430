"""3D Gaussians: the parameters gsplat's rasterizer and densification strategies work on.

Parameters are stored raw, as optimised, under gsplat's strategy keys, so a
`gsplat.strategy.DefaultStrategy` can grow and prune `model.params` in place: `means` [N, 3],
`scales` [N, 3] (log), `quats` [N, 4] (wxyz, unnormalised), `opacities` [N] (logit), `sh0`
[N, 1, 3] and `shN` [N, (d + 1)^2 - 1, 3] (SH colour coefficients of degree d). Colours follow
3DGS: the DC colour is rgb = 0.5 + C0 * sh0. Covariances are Sigma = R S S^T R^T with R the
rotation of the normalised quaternion and S = diag(exp(scales)), gsplat's convention.

The density field `density` (and its fast gridded twin `density_grid`) is what DreamGaussian
meshes with marching cubes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import trimesh
from scipy.spatial import cKDTree
from torch import Tensor, nn

from framework.export.gaussian_ply import read_gaussian_ply
from framework.export.mesh_io import load_mesh_zup

SH_C0 = 0.28209479177387814
"""The degree-0 real spherical harmonic, 1 / (2 sqrt(pi))."""

CUTOFF_SIGMA = 3.0
"""`density_grid` ignores a Gaussian beyond this Mahalanobis distance (exp(-4.5) ~ 1 % of its peak)."""

_KEYS = ("means", "scales", "quats", "opacities", "sh0", "shN")


def rgb_to_sh(rgb: Tensor) -> Tensor:
    """DC SH coefficients [..., 3] of colours `rgb` [..., 3] in [0, 1]."""
    return (rgb - 0.5) / SH_C0


def num_sh_rest(sh_degree: int) -> int:
    """Higher-order SH coefficients per channel for `sh_degree`: (d + 1)^2 - 1."""
    return (sh_degree + 1) ** 2 - 1


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices [N, 3, 3] of unit quaternions `quats` [N, 4] in (w, x, y, z) order."""
    w, x, y, z = quats.unbind(-1)
    rows = (
        (1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)),
        (2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)),
        (2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)),
    )
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


def _spacing(points: Tensor) -> Tensor:
    """Per point, the root mean squared distance to its 3 nearest neighbours [N] (3DGS's initial
    scale), at least 1e-4 so duplicate points still get a usable Gaussian."""
    n = len(points)
    if n == 0:
        return points.new_zeros(0)
    if n == 1:
        raise ValueError("one point has no spacing to size its Gaussian from: pass init_scale")
    array = points.double().numpy()
    distances, _ = cKDTree(array).query(array, k=min(3, n - 1) + 1)
    mean_square = np.square(distances[:, 1:]).mean(axis=1)
    return torch.from_numpy(np.sqrt(mean_square)).float().clamp_min(1e-4)


def _ball(n: int, radius: float, generator: torch.Generator) -> Tensor:
    """`n` points [n, 3] uniform in the ball of `radius` at the origin."""
    direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=generator), dim=-1)
    return direction * radius * torch.rand(n, 1, generator=generator) ** (1.0 / 3.0)


def _load_points(path: str | os.PathLike) -> tuple[Tensor, Tensor | None]:
    """A point cloud file, taken as stored (our world frame): `.npy` [N, 3] xyz or [N, 6] xyz + rgb
    in [0, 1], or a point cloud trimesh reads (`.ply`, `.xyz`, ...) with optional colours."""
    if Path(path).suffix == ".npy":
        array = torch.from_numpy(np.load(path)).float()
        return array[:, :3], (array[:, 3:6] if array.shape[1] >= 6 else None)
    cloud = trimesh.load(path, process=False)
    points = torch.from_numpy(np.asarray(cloud.vertices)).float()
    colors = getattr(cloud, "colors", None)
    if colors is None or len(colors) != len(points):
        return points, None
    return points, torch.from_numpy(np.asarray(colors)[:, :3] / 255.0).float()


def _surface_colors(mesh: trimesh.Trimesh, faces: np.ndarray, barycentric: np.ndarray) -> Tensor | None:
    """Colours [n, 3] in [0, 1] of surface samples on `faces` [n] at `barycentric` [n, 3]: from the
    texture, the material colour, vertex or face colours, whichever the mesh has; None without."""
    visual = mesh.visual
    corners = mesh.faces[faces]
    if visual.kind == "texture":
        uv = None if visual.uv is None else np.einsum("nij,ni->nj", np.asarray(visual.uv)[corners], barycentric)
        rgba = visual.material.to_color(uv)
        if rgba is None:
            return None
        rgba = np.broadcast_to(np.asarray(rgba, dtype=np.float64), (len(faces), 4))
    elif visual.kind == "vertex":
        rgba = np.einsum("nij,ni->nj", np.asarray(visual.vertex_colors, dtype=np.float64)[corners], barycentric)
    elif visual.kind == "face":
        rgba = np.asarray(visual.face_colors, dtype=np.float64)[faces]
    else:
        return None
    return torch.from_numpy(rgba[:, :3] / 255.0).float()


def _sample_mesh(mesh: str | os.PathLike | trimesh.Trimesh, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
    """`n` area-uniform surface samples [n, 3] of `mesh` and their colours [n, 3] (or None).

    A path is read with `load_mesh_zup` (our exports are +Y up); a `trimesh.Trimesh` is taken as
    already in our z-up world.
    """
    if not isinstance(mesh, trimesh.Trimesh):
        mesh = load_mesh_zup(mesh)
    areas = torch.tensor(mesh.area_faces, dtype=torch.float64)
    if n == 0:
        return torch.zeros(0, 3), None
    if not areas.sum() > 0:
        raise ValueError("cannot sample a mesh with no surface area")
    faces = torch.multinomial(areas, n, replacement=True, generator=generator).numpy()
    # Uniform barycentrics: the square root keeps samples from bunching at one corner.
    r1, r2 = torch.rand(2, n, generator=generator, dtype=torch.float64).numpy()
    root = np.sqrt(r1)
    barycentric = np.stack([1.0 - root, root * (1.0 - r2), root * r2], axis=1)
    points = np.einsum("nij,ni->nj", np.asarray(mesh.vertices, dtype=np.float64)[mesh.faces[faces]], barycentric)
    return torch.from_numpy(points).float(), _surface_colors(mesh, faces, barycentric)


class GaussianModel(nn.Module):
    """A set of anisotropic 3D Gaussians with opacities and SH colours.

    Args:
        n_init: Gaussians made by the "sphere" and "mesh" inits ("points" and "ply" keep the
            file's count).
        init: "sphere" (uniform in a ball of `init_radius`), "points" (a point cloud file, see
            `_load_points`), "mesh" (`n_init` surface samples of a GLB/OBJ written +Y up) or
            "ply" (a 3DGS `.ply`); the last three read `init_path`.
        init_radius: radius of the "sphere" init.
        init_scale: the standard deviation of every new Gaussian, in world units; None sizes each
            one by its distance to its 3 nearest neighbours (3DGS's rule), so neighbours overlap.
        init_opacity: opacity of every new Gaussian, in (0, 1).
        init_color: RGB in [0, 1] of Gaussians without a colour from their source; None gives
            each a random grey (channels uniform in [0.4, 0.6]).
        sh_degree: degree of the SH colours.
        init_path: the file of the "points", "mesh" and "ply" inits.
        seed: seeds the init's own generator (the global RNG is never touched).
    """

    def __init__(
        self,
        n_init: int = 4096,
        init: str = "sphere",
        init_radius: float = 0.5,
        init_scale: float | None = None,
        init_opacity: float = 0.1,
        init_color: Sequence[float] | None = None,
        sh_degree: int = 0,
        init_path: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.sh_degree = sh_degree
        if init not in ("sphere", "points", "mesh", "ply"):
            raise ValueError(f"unknown init {init!r}: expected 'sphere', 'points', 'mesh' or 'ply'")
        if init != "sphere" and init_path is None:
            raise ValueError(f"init={init!r} needs init_path")
        generator = torch.Generator().manual_seed(seed)
        if init == "ply":
            self._set(_pad_sh(read_gaussian_ply(init_path), sh_degree, init_path))
            return
        if init == "sphere":
            points, colors = _ball(n_init, init_radius, generator), None
        elif init == "points":
            points, colors = _load_points(init_path)
        else:
            points, colors = _sample_mesh(init_path, n_init, generator)
        self._initialise(points, colors, init_scale, init_opacity, init_color, generator)

    @classmethod
    def from_points(
        cls,
        points: Tensor,
        colors: Tensor | None = None,
        *,
        init_scale: float | None = None,
        init_opacity: float = 0.1,
        init_color: Sequence[float] | None = None,
        sh_degree: int = 0,
        seed: int = 0,
    ) -> GaussianModel:
        """One Gaussian per point (GSGEN's Point-E start, or any point cloud).

        Args:
            points: [N, 3] centres in our world frame.
            colors: [N, 3] RGB in [0, 1], or None for `init_color` / random greys.
            init_scale, init_opacity, init_color, sh_degree, seed: as for the constructor.
        """
        model = cls(n_init=0, sh_degree=sh_degree)
        generator = torch.Generator().manual_seed(seed)
        model._initialise(points.detach().float().cpu(), colors, init_scale, init_opacity, init_color, generator)
        return model

    @classmethod
    def from_mesh(
        cls,
        mesh: str | os.PathLike | trimesh.Trimesh,
        n: int,
        *,
        init_scale: float | None = None,
        init_opacity: float = 0.1,
        init_color: Sequence[float] | None = None,
        sh_degree: int = 0,
        seed: int = 0,
    ) -> GaussianModel:
        """Gaussians on `n` area-uniform surface samples, coloured by the mesh where it has colour.

        Args:
            mesh: a GLB/OBJ file written +Y up (read with `load_mesh_zup`), or a
                `trimesh.Trimesh` already in our z-up world.
            n: number of Gaussians.
            init_scale, init_opacity, init_color, sh_degree, seed: as for the constructor.
        """
        model = cls(n_init=0, sh_degree=sh_degree)
        generator = torch.Generator().manual_seed(seed)
        points, colors = _sample_mesh(mesh, n, generator)
        model._initialise(points, colors, init_scale, init_opacity, init_color, generator)
        return model

    @classmethod
    def from_ply(cls, path: str | os.PathLike, sh_degree: int | None = None) -> GaussianModel:
        """The Gaussians of a 3DGS `.ply`, with the file's SH degree unless `sh_degree` raises it."""
        params = read_gaussian_ply(path)
        file_degree = math.isqrt(params["shN"].shape[1] + 1) - 1
        model = cls(n_init=0, sh_degree=file_degree if sh_degree is None else sh_degree)
        model._set(_pad_sh(params, model.sh_degree, path))
        return model

    @classmethod
    def from_tensors(cls, params: Mapping[str, Tensor], sh_degree: int | None = None) -> GaussianModel:
        """Gaussians holding `params` as they are (a feed-forward reconstructor's output).

        Args:
            params: "means" [N, 3], "scales" [N, 3] (log), "quats" [N, 4], "opacities" [N]
                (logit), "sh0" [N, 1, 3] and optionally "shN" [N, K, 3] (zeros when absent).
            sh_degree: None: the degree `shN` implies (0 without it).
        """
        missing = {"means", "scales", "quats", "opacities", "sh0"} - set(params)
        if missing:
            raise ValueError(f"GaussianModel.from_tensors: missing {sorted(missing)}")
        n = params["means"].shape[0]
        for key, value in params.items():
            if value.shape[0] != n:
                raise ValueError(f"GaussianModel.from_tensors: {key} has {value.shape[0]} rows, means has {n}")
        degree = (math.isqrt(params["shN"].shape[1] + 1) - 1 if "shN" in params else 0) if sh_degree is None else sh_degree
        model = cls(n_init=0, sh_degree=degree)
        tensors = dict(params)
        tensors.setdefault("shN", params["means"].new_zeros(n, num_sh_rest(degree), 3))
        model._set(tensors)
        return model

    def shape_state(self) -> dict[str, int]:
        """What `load_shape_state` needs to take this size (stored in checkpoints)."""
        return {"n_gaussians": self.num_gaussians}

    def load_shape_state(self, state: Mapping[str, int]) -> None:
        """Resize to a checkpoint's count before its state dict is loaded."""
        self.resize(int(state["n_gaussians"]))

    def _initialise(
        self,
        points: Tensor,
        colors: Tensor | None,
        init_scale: float | None,
        init_opacity: float,
        init_color: Sequence[float] | None,
        generator: torch.Generator,
    ) -> None:
        """Fresh parameters: one isotropic, unrotated Gaussian per point [N, 3]."""
        n = len(points)
        if colors is None:
            if init_color is None:
                colors = 0.4 + 0.2 * torch.rand(n, 3, generator=generator)
            else:
                colors = torch.tensor([float(c) for c in init_color]).expand(n, 3)
        scale = torch.full((n,), float(init_scale)) if init_scale is not None else _spacing(points)
        self._set(
            {
                "means": points,
                "scales": scale.log()[:, None].repeat(1, 3),
                "quats": torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1),
                "opacities": torch.full((n,), math.log(init_opacity / (1.0 - init_opacity))),
                "sh0": rgb_to_sh(colors.float().cpu()).reshape(n, 1, 3),
                "shN": torch.zeros(n, num_sh_rest(self.sh_degree), 3),
            }
        )

    def _set(self, tensors: dict[str, Tensor]) -> None:
        self.params = nn.ParameterDict({key: nn.Parameter(tensors[key].detach().float().contiguous()) for key in _KEYS})

    def resize(self, n: int) -> None:
        """Replace every parameter by an uninitialised one for `n` Gaussians.

        Lightning loads a checkpoint into an existing module, so the system calls this from
        `on_load_checkpoint` with the stored count before `load_state_dict` fills the values.
        Optimisers holding the old parameters must be rebuilt.
        """
        for key, old in self.params.items():
            self.params[key] = nn.Parameter(old.new_empty(n, *old.shape[1:]), requires_grad=old.requires_grad)

    @property
    def num_gaussians(self) -> int:
        return len(self.params["means"])

    @property
    def means(self) -> Tensor:
        """Centres [N, 3]."""
        return self.params["means"]

    @property
    def scales(self) -> Tensor:
        """Standard deviations along the Gaussians' axes [N, 3]."""
        return torch.exp(self.params["scales"])

    @property
    def quats(self) -> Tensor:
        """Unit rotations [N, 4], (w, x, y, z)."""
        return torch.nn.functional.normalize(self.params["quats"], dim=-1)

    @property
    def opacities(self) -> Tensor:
        """Peak opacities [N] in (0, 1)."""
        return torch.sigmoid(self.params["opacities"])

    @property
    def colors(self) -> Tensor:
        """All SH coefficients [N, (d + 1)^2, 3], the `colors` gsplat's rasterization takes with `sh_degree`."""
        return torch.cat([self.params["sh0"], self.params["shN"]], dim=1)

    @property
    def rgb(self) -> Tensor:
        """View-independent (DC) colours [N, 3] in [0, 1], for exports."""
        return (0.5 + SH_C0 * self.params["sh0"][:, 0]).clamp(0.0, 1.0)

    @property
    def point_cloud(self) -> Tensor:
        """Centres and DC colours [N, 6]: what a point-cloud prior scores (GSGEN's 3D slot)."""
        return torch.cat([self.means, self.rgb], dim=-1)

    def _rotations_and_variances(self) -> tuple[Tensor, Tensor]:
        """R [N, 3, 3] and the variances along the Gaussians' axes, diag(S)^2 [N, 3]."""
        return quat_to_rotmat(self.quats), self.scales.square()

    def density(self, points: Tensor, chunk: int = 1 << 22) -> Tensor:
        """The opacity field d(x) = sum_i alpha_i exp(-(x - mu_i)^T Sigma_i^-1 (x - mu_i) / 2).

        Exact (no cut-off) and differentiable; every point meets every Gaussian, so use
        `density_grid` to fill a grid.

        Args:
            points: [P, 3] world positions.
            chunk: bound on points x Gaussians evaluated at once.

        Returns:
            [P] densities.
        """
        rotations, variances = self._rotations_and_variances()
        inverse = (rotations / variances[:, None, :]) @ rotations.transpose(1, 2)  # R S^-2 R^T
        alphas = self.opacities
        per_chunk = max(1, chunk // max(1, self.num_gaussians))
        out = [points.new_zeros(0)]
        for part in points.split(per_chunk):
            offsets = part[:, None, :] - self.means  # [p, N, 3]
            mahalanobis = torch.einsum("pni,nij,pnj->pn", offsets, inverse, offsets)
            out.append((alphas * torch.exp(-0.5 * mahalanobis)).sum(dim=-1))
        return torch.cat(out)

    @torch.no_grad()
    def density_grid(self, resolution: int, bound: float = 1.0, chunk: int = 1 << 20) -> Tensor:
        """`density` on the grid `torch.linspace(-bound, bound, resolution)`^3, cut off at 3 sigma.

        Each Gaussian is splatted only into the cells of its axis-aligned 3-sigma box, and adds
        nothing beyond Mahalanobis distance 3: the result is the exact sum of the truncated
        Gaussians, within alpha * exp(-4.5) per Gaussian of `density`. The boxes' cells are
        enumerated as one flat index space, `chunk` cells at a time, so memory stays bounded
        whatever the Gaussians' sizes. Indexed (x, y, z) like `marching_cubes.sample_grid`, so the
        grid goes straight to marching cubes.

        Args:
            resolution: samples per axis, the first and last on the box faces.
            bound: the grid covers [-bound, bound]^3.
            chunk: cells evaluated at once.

        Returns:
            [resolution, resolution, resolution] float32 densities on the model's device,
            indexed (x, y, z).
        """
        device = self.means.device
        axis = torch.linspace(-bound, bound, resolution, device=device)
        spacing = 2.0 * bound / (resolution - 1)
        means, alphas = self.means.float(), self.opacities.float()
        rotations, variances = (t.float() for t in self._rotations_and_variances())
        inverse = (rotations / variances[:, None, :]) @ rotations.transpose(1, 2)
        # Quadratic form coefficients of (dx^2, dy^2, dz^2, dx dy, dx dz, dy dz).
        i, j = [0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2]
        coefficients = inverse[:, i, j] * torch.tensor([1.0, 1.0, 1.0, 2.0, 2.0, 2.0], device=device)
        # The box half-widths: 3 marginal standard deviations, sqrt(Sigma_kk).
        reach = CUTOFF_SIGMA * (rotations.square() @ variances[:, :, None])[:, :, 0].sqrt()
        valid = means.isfinite().all(dim=1) & reach.isfinite().all(dim=1) & coefficients.isfinite().all(dim=1)
        means, coefficients, alphas, reach = means[valid], coefficients[valid], alphas[valid], reach[valid]
        low = torch.ceil((means - reach + bound) / spacing).clamp(0, resolution).long()
        high = torch.floor((means + reach + bound) / spacing).clamp(-1, resolution - 1).long()
        counts = (high - low + 1).clamp_min(0)  # [N, 3] cells per axis
        ends = counts.prod(dim=1).cumsum(dim=0)
        starts = ends - counts.prod(dim=1)
        total = int(ends[-1]) if len(ends) else 0

        grid = torch.zeros(resolution**3, device=device)
        for start in range(0, total, chunk):
            cells = torch.arange(start, min(start + chunk, total), device=device)
            owner = torch.searchsorted(ends, cells, right=True)
            local = cells - starts[owner]
            count = counts[owner]
            k = local % count[:, 2]
            rest = local // count[:, 2]
            index = torch.stack([rest // count[:, 1], rest % count[:, 1], k], dim=1) + low[owner]  # [M, 3]
            d = axis[index] - means[owner]
            products = torch.stack([d[:, 0] * d[:, 0], d[:, 1] * d[:, 1], d[:, 2] * d[:, 2], d[:, 0] * d[:, 1], d[:, 0] * d[:, 2], d[:, 1] * d[:, 2]], dim=1)
            mahalanobis = (coefficients[owner] * products).sum(dim=1)
            values = torch.where(mahalanobis <= CUTOFF_SIGMA**2, alphas[owner] * torch.exp(-0.5 * mahalanobis), 0.0)
            grid.index_add_(0, (index[:, 0] * resolution + index[:, 1]) * resolution + index[:, 2], values)
        return grid.view(resolution, resolution, resolution)


def _pad_sh(params: dict[str, Tensor], sh_degree: int, path: str | os.PathLike) -> dict[str, Tensor]:
    """Zero-pad the file's higher SH bands up to `sh_degree` (a lower-degree file loads into a
    higher-degree model); a higher-degree file is refused rather than silently truncated."""
    rest = params["shN"]
    wanted = num_sh_rest(sh_degree)
    if rest.shape[1] > wanted:
        raise ValueError(f"{path}: SH degree {math.isqrt(rest.shape[1] + 1) - 1} exceeds the model's sh_degree {sh_degree}")
    padding = rest.new_zeros(len(rest), wanted - rest.shape[1], 3)
    return {**params, "shN": torch.cat([rest, padding], dim=1)}

