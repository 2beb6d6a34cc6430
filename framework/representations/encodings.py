"""Positional encodings of the NeRF field: a triplane and an Instant-NGP multiresolution hash grid.

Both take world points `[N, 3]` (float32) in the cube `[-bound, bound]^3` (bound 1 by default: the
unit cube around the unit sphere that holds the object) and return features `[N, out_dim]`
(float32). Points outside the cube are clamped onto its surface: they get the features of the
nearest surface point and no gradient with respect to the points.

The hash grid stores its tables in tiny-cuda-nn's layout and evaluates tiny-cuda-nn's function
(same level scales, +0.5 offset, dense/hash split, hash and wrap-around), so one parameter tensor
serves both the pure-torch path and tcnn's CUDA kernel, and a checkpoint moves between them.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Plane k of a triplane samples the point's coordinates along these two axes: xy, xz, yz.
_PLANE_AXES = [[0, 1], [0, 2], [1, 2]]
# Instant-NGP's spatial hash: XOR of the vertex coordinates times these (x's factor 1 keeps
# neighbouring x vertices in neighbouring slots, which helps memory coherence).
_HASH_PRIMES = (1, 2654435761, 805459861)
_BACKENDS = ("auto", "torch", "cuda")


class TriplaneEncoding(nn.Module):
    """Three axis-aligned feature planes (xy, xz, yz), sampled bilinearly.

    Plane k for axes (a, b) is stored as `[channels, R, R]` with rows along b and columns along
    a (the `F.grid_sample` convention); its vertex (row j, column i) sits at
    `a = -bound + 2 * bound * i / (R - 1)`, `b = -bound + 2 * bound * j / (R - 1)`
    (`align_corners=True`: the outermost vertices lie on the cube's faces).

    Args:
        resolution: R, vertices per plane side.
        channels: features per plane.
        combine: "concat" (out_dim = 3 * channels, in xy, xz, yz order) or "sum"
            (out_dim = channels).
        bound: half side of the encoded cube.
        init_std: standard deviation of the normal initialisation; small so that the field
            starts near its MLP's bias.
    """

    def __init__(
        self,
        resolution: int = 128,
        channels: int = 16,
        combine: str = "concat",
        bound: float = 1.0,
        init_std: float = 0.1,
    ) -> None:
        super().__init__()
        if combine not in ("concat", "sum"):
            raise ValueError(f"TriplaneEncoding combine must be 'concat' or 'sum', got {combine!r}")
        self.combine = combine
        self.bound = bound
        self.init_std = init_std
        self.planes = nn.Parameter(torch.empty(3, channels, resolution, resolution))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """A fresh draw of the planes from the global generator (a new particle's)."""
        with torch.no_grad():
            self.planes.copy_(torch.randn(self.planes.shape) * self.init_std)

    @classmethod
    def from_planes(cls, planes: Tensor, combine: str = "concat", bound: float = 1.0) -> "TriplaneEncoding":
        """An encoding holding `planes` [3, C, R, R] as they are (a feed-forward reconstructor's
        triplane, LRM-style)."""
        if planes.ndim != 4 or planes.shape[0] != 3 or planes.shape[2] != planes.shape[3]:
            raise ValueError(f"TriplaneEncoding.from_planes: planes must be [3, C, R, R], got {tuple(planes.shape)}")
        with torch.random.fork_rng(devices=[]):  # the placeholder's init must not move the global RNG
            encoding = cls(resolution=1, channels=planes.shape[1], combine=combine, bound=bound)
        encoding.planes = nn.Parameter(planes.detach().float().clone())
        return encoding

    @property
    def out_dim(self) -> int:
        channels = self.planes.shape[1]
        return 3 * channels if self.combine == "concat" else channels

    def forward(self, points: Tensor) -> Tensor:
        """Encode points.

        Args:
            points: [N, 3] world points.

        Returns:
            [N, out_dim] features.
        """
        coords = (points / self.bound).clamp(-1.0, 1.0)
        # One grid_sample call for all three planes: the planes are the batch, the points one row.
        grid = coords[:, _PLANE_AXES].transpose(0, 1).unsqueeze(1)  # [3, 1, N, 2]
        features = F.grid_sample(self.planes, grid, mode="bilinear", align_corners=True)  # [3, C, 1, N]
        features = features[:, :, 0].permute(2, 0, 1)  # [N, 3, C]
        return features.flatten(1) if self.combine == "concat" else features.sum(1)


@dataclass(frozen=True)
class HashGridLevel:
    """Where one level of a hash grid lives in the flat table, as tiny-cuda-nn lays it out.

    Attributes:
        scale: float32 value of `base_resolution * per_level_scale**level - 1`; a point at
            `u` in [0, 1] maps to the grid coordinate `u * scale + 0.5`.
        resolution: vertices per axis, `ceil(scale) + 1`.
        size: table entries of this level: `resolution**3` rounded up to a multiple of 8, or
            `2**log2_hashmap_size` when the dense grid does not fit.
        offset: index of the level's first entry in the flat table.
        hashed: whether vertices are hashed (the dense grid does not fit) or indexed densely.
    """

    scale: float
    resolution: int
    size: int
    offset: int
    hashed: bool


def hash_grid_levels(
    n_levels: int, log2_hashmap_size: int, base_resolution: int, per_level_scale: float
) -> list[HashGridLevel]:
    """The per-level layout of a hash grid (tiny-cuda-nn's `GridEncodingTemplated`)."""
    # float32 throughout, as tcnn computes it, so that both backends floor to the same cells.
    log2_scale = torch.tensor(per_level_scale, dtype=torch.float32).log2()
    scales = torch.exp2(torch.arange(n_levels, dtype=torch.float32) * log2_scale) * base_resolution - 1.0
    table_size = 2**log2_hashmap_size
    levels, offset = [], 0
    for scale in scales.tolist():
        resolution = math.ceil(scale) + 1
        hashed = resolution**3 > table_size
        size = table_size if hashed else -(-(resolution**3) // 8) * 8
        levels.append(HashGridLevel(scale, resolution, size, offset, hashed))
        offset += size
    return levels


class HashGridEncoding(nn.Module):
    """Instant-NGP multiresolution hash grid with trilinear interpolation.

    Level l spans about `base_resolution * b**l` vertices per axis, with `b` (`per_level_scale`)
    chosen so that the finest level reaches `finest_resolution`. Levels whose dense grid fits in `2**log2_hashmap_size` entries are
    indexed densely, the others through the spatial hash. The pure-torch path evaluates all
    levels at once (dense levels as one group, hashed levels as another); `reference_hash_grid_encode`
    is its loop-by-loop twin. With `backend` "auto" or "cuda", CUDA inputs go through
    tiny-cuda-nn's HashGrid, which shares `params`.

    Args:
        n_levels: number of resolutions L.
        n_features_per_level: features per level F; out_dim = L * F.
        log2_hashmap_size: log2 of the entries per level table.
        base_resolution: resolution of the coarsest level.
        finest_resolution: resolution of the finest level.
        bound: half side of the encoded cube.
        backend: "torch", "cuda" (tiny-cuda-nn, CUDA inputs only) or "auto" (tiny-cuda-nn
            when it is installed and the input is on CUDA, torch otherwise).

    Attributes:
        params: [n_entries * F] the flat table of all levels (tcnn's layout:
            `params.view(-1, F)[level.offset + index]`), uniform in [-1e-4, 1e-4] at first.
    """

    def __init__(
        self,
        n_levels: int = 16,
        n_features_per_level: int = 2,
        log2_hashmap_size: int = 19,
        base_resolution: int = 16,
        finest_resolution: int = 2048,
        bound: float = 1.0,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if backend not in _BACKENDS:
            raise ValueError(f"HashGridEncoding backend must be one of {_BACKENDS}, got {backend!r}")
        if backend == "cuda":
            available = {"tinycudann": _import_tinycudann() is not None, "CUDA": torch.cuda.is_available()}
            missing = ", ".join(name for name, present in available.items() if not present)
            if missing:
                raise RuntimeError(f"HashGridEncoding backend='cuda' needs tinycudann and CUDA; missing: {missing}")
        self.n_levels = n_levels
        self.n_features_per_level = n_features_per_level
        self.log2_hashmap_size = log2_hashmap_size
        self.base_resolution = base_resolution
        self.per_level_scale = math.exp(math.log(finest_resolution / base_resolution) / max(n_levels - 1, 1))
        self.bound = bound
        self.backend = backend

        levels = hash_grid_levels(n_levels, log2_hashmap_size, base_resolution, self.per_level_scale)
        n_entries = levels[-1].offset + levels[-1].size
        self.params = nn.Parameter(torch.empty(n_entries * n_features_per_level))
        self.reset_parameters()
        # Resolutions grow with the level, so the dense levels come first.
        self.n_dense_levels = sum(not level.hashed for level in levels)
        dense, hashed = levels[: self.n_dense_levels], levels[self.n_dense_levels :]

        def constant(name: str, values: list, dtype: torch.dtype = torch.long) -> None:
            self.register_buffer(name, torch.tensor(values, dtype=dtype), persistent=False)

        constant("_dense_scale", [level.scale for level in dense], torch.float32)
        constant("_dense_strides", [[1, level.resolution, level.resolution**2] for level in dense])  # [l, 3]
        constant("_dense_size", [level.size for level in dense])
        constant("_dense_offset", [level.offset for level in dense])
        constant("_hashed_scale", [level.scale for level in hashed], torch.float32)
        constant("_hashed_offset", [level.offset for level in hashed])
        constant("_primes", list(_HASH_PRIMES))
        self._tcnn_encoding = None  # built on the first CUDA call; deliberately not a submodule

    def reset_parameters(self) -> None:
        """A fresh draw of the table from the global generator (a new particle's)."""
        with torch.no_grad():
            self.params.uniform_(-1e-4, 1e-4)

    @property
    def out_dim(self) -> int:
        return self.n_levels * self.n_features_per_level

    def forward(self, points: Tensor) -> Tensor:
        """Encode points.

        Args:
            points: [N, 3] world points.

        Returns:
            [N, out_dim] features, level-major (level l's F features at `l*F : (l+1)*F`).
        """
        unit = ((points / self.bound + 1.0) / 2.0).clamp(0.0, 1.0)
        if self._use_tcnn(points):
            return self._tcnn(unit)
        table = self.params.view(-1, self.n_features_per_level)
        outputs = []
        if self.n_dense_levels:
            weights, vertices = _corner_weights_and_vertices(unit, self._dense_scale)
            index = _combine_corners(vertices * self._dense_strides[:, :, None], torch.add)
            size = self._dense_size[:, None]
            # Upper vertices on the top faces can pass the grid's end; tcnn wraps them around.
            index = torch.where(index >= size, index - size, index) + self._dense_offset[:, None]
            outputs.append(_interpolate(table, index, weights))
        if self.n_dense_levels < self.n_levels:
            weights, vertices = _corner_weights_and_vertices(unit, self._hashed_scale)
            # Masking each term before the XOR keeps the hash's low bits (all the modulo keeps).
            terms = (vertices * self._primes[:, None]) & (2**self.log2_hashmap_size - 1)
            index = _combine_corners(terms, torch.bitwise_xor) + self._hashed_offset[:, None]
            outputs.append(_interpolate(table, index, weights))
        return torch.cat(outputs, dim=1).flatten(1)

    def _use_tcnn(self, points: Tensor) -> bool:
        if self.backend == "torch":
            return False
        if self.backend == "cuda" and not points.is_cuda:
            raise RuntimeError(f"HashGridEncoding backend='cuda' needs CUDA points; got points on {points.device}")
        return points.is_cuda and _import_tinycudann() is not None

    def _tcnn(self, unit: Tensor) -> Tensor:
        if self._tcnn_encoding is None:
            config = {
                "otype": "HashGrid",
                "n_levels": self.n_levels,
                "n_features_per_level": self.n_features_per_level,
                "log2_hashmap_size": self.log2_hashmap_size,
                "base_resolution": self.base_resolution,
                "per_level_scale": self.per_level_scale,
            }
            encoding = _import_tinycudann().Encoding(3, config, dtype=torch.float32)
            if encoding.params.numel() != self.params.numel():
                raise RuntimeError(
                    f"tinycudann HashGrid has {encoding.params.numel()} parameters, expected {self.params.numel()}"
                )
            # Not a submodule: that would put a second copy of the table in the state dict.
            object.__setattr__(self, "_tcnn_encoding", encoding)
        self._tcnn_encoding.params = self.params  # tcnn reads our table, so both backends share it
        return self._tcnn_encoding(unit)


def reference_hash_grid_encode(
    points: Tensor,
    params: Tensor,
    *,
    n_levels: int,
    n_features_per_level: int,
    log2_hashmap_size: int,
    base_resolution: int,
    per_level_scale: float,
    bound: float = 1.0,
) -> Tensor:
    """Deliberately simple hash grid encoding (loops over levels and corners): the parity twin.

    Args:
        points: [N, 3] world points.
        params: [n_entries * F] flat table (`HashGridEncoding.params`).
        n_levels, n_features_per_level, log2_hashmap_size, base_resolution, per_level_scale,
            bound: as the `HashGridEncoding` attributes of the same names.

    Returns:
        [N, n_levels * F] features.
    """
    table = params.view(-1, n_features_per_level)
    unit = ((points / bound + 1.0) / 2.0).clamp(0.0, 1.0)
    features = []
    for level in hash_grid_levels(n_levels, log2_hashmap_size, base_resolution, per_level_scale):
        position = unit * level.scale + 0.5
        lower = position.floor()
        fraction = position - lower
        lower = lower.long()
        feature = torch.zeros(points.shape[0], n_features_per_level, dtype=table.dtype, device=table.device)
        for corner in itertools.product((0, 1), repeat=3):
            vertex = lower + torch.tensor(corner, device=points.device)
            weight = torch.ones_like(fraction[:, 0])
            for axis in range(3):
                weight = weight * (fraction[:, axis] if corner[axis] else 1.0 - fraction[:, axis])
            if level.hashed:
                x, y, z = (vertex[:, axis] * _HASH_PRIMES[axis] for axis in range(3))
                index = x ^ y ^ z
            else:
                index = vertex[:, 0] + vertex[:, 1] * level.resolution + vertex[:, 2] * level.resolution**2
            feature = feature + weight[:, None] * table[level.offset + index % level.size]
        features.append(feature)
    return torch.cat(features, dim=1)


def _corner_weights_and_vertices(unit: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    """Trilinear weights [N, l, 8] and lower/upper vertex coordinates [N, l, 3, 2] per level.

    Corner c = 4 * bx + 2 * by + bz, where b = 1 picks the upper vertex along that axis.
    """
    position = unit[:, None, :] * scale[:, None] + 0.5  # [N, l, 3]
    lower = position.detach().floor()
    fraction = position - lower
    axis_weights = torch.stack([1.0 - fraction, fraction], dim=-1)  # [N, l, 3, 2]
    weights = _combine_corners(axis_weights, torch.mul)
    lower = lower.long()
    return weights, torch.stack([lower, lower + 1], dim=-1)


def _combine_corners(per_axis: Tensor, op) -> Tensor:
    """[..., 3, 2] per-axis terms (lower, upper) -> [..., 8] `op(op(x, y), z)` for every corner."""
    x, y, z = per_axis[..., 0, :, None, None], per_axis[..., 1, None, :, None], per_axis[..., 2, None, None, :]
    return op(op(x, y), z).flatten(-3)


def _interpolate(table: Tensor, index: Tensor, weights: Tensor) -> Tensor:
    """Weighted sum of the 8 corner features: table [E, F], index, weights [N, l, 8] -> [N, l, F]."""
    corners = table.index_select(0, index.flatten()).view(*index.shape, table.shape[1])  # [N, l, 8, F]
    return (weights.unsqueeze(-2) @ corners).squeeze(-2)


@functools.cache
def _import_tinycudann() -> ModuleType | None:
    """tinycudann, or None when it is missing (it raises OSError on import without CUDA)."""
    try:
        import tinycudann
    except (ImportError, OSError):
        return None
    return tinycudann
