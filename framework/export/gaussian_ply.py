"""3D Gaussians in the standard 3DGS `.ply` layout, the file the usual splat viewers open.

The layout is the one of the original 3DGS code (and of SuperSplat, gsplat's exporter and most
viewers): one `vertex` element, binary little-endian float32 properties in the order

    x, y, z, nx, ny, nz, f_dc_0..2, f_rest_0..M-1, opacity, scale_0..2, rot_0..3

with every value stored raw, as optimised: opacity as a logit, scales as logs, the rotation as an
unnormalised (w, x, y, z) quaternion, colours as SH coefficients. `f_rest` is channel-major: the
M / 3 higher-order coefficients of red, then of green, then of blue. The normals are zeros (3DGS
writes them, nothing reads them).

Coordinates are our world frame, +z up. Unlike glTF, a 3DGS file has no up-axis convention:
the original code writes whatever frame COLMAP gave it (usually -y up), and viewers offer a
rotation instead of assuming one. So we store our frame unchanged, and a reader gets back the
positions the model had.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import plyfile
import torch
from torch import Tensor

from framework.utils.atomic import atomic_path

if TYPE_CHECKING:
    from framework.representations.gaussians import GaussianModel

OPACITY_THRESHOLD = 1.0 / 255.0
"""Gaussians fainter than this (after the sigmoid) are not written: one 8-bit level, invisible."""

_REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")


def _property_names(n_rest: int) -> list[str]:
    """The 3DGS property order, with `n_rest` f_rest values."""
    return [
        "x", "y", "z", "nx", "ny", "nz",
        "f_dc_0", "f_dc_1", "f_dc_2",
        *(f"f_rest_{i}" for i in range(n_rest)),
        "opacity",
        "scale_0", "scale_1", "scale_2",
        "rot_0", "rot_1", "rot_2", "rot_3",
    ]  # fmt: skip


def write_gaussian_ply(
    path: str | os.PathLike,
    splats: GaussianModel | Mapping[str, Tensor],
    opacity_threshold: float = OPACITY_THRESHOLD,
) -> int:
    """Write Gaussians as a standard 3DGS `.ply`, atomically, in our z-up world frame.

    Gaussians with any non-finite value are dropped (a viewer would fail on the whole file), and
    so are those with sigmoid(opacity) below `opacity_threshold` (they only cost file size).

    Args:
        path: the `.ply` file.
        splats: a `GaussianModel`, or tensors keyed like its `params`: `means` [N, 3], `scales`
            [N, 3] (log), `quats` [N, 4] (wxyz), `opacities` [N] (logit), `sh0` [N, 1, 3] and
            `shN` [N, K, 3].
        opacity_threshold: the faintest opacity kept, in [0, 1].

    Returns:
        The number of Gaussians written.
    """
    params = splats if isinstance(splats, Mapping) else splats.params
    tensors = {key: params[key].detach().to("cpu", torch.float32) for key in ("means", "scales", "quats", "opacities", "sh0", "shN")}
    n = len(tensors["means"])
    sh_rest = tensors["shN"].transpose(1, 2).reshape(n, -1)  # channel-major: [N, 3 * K]
    columns = torch.cat(
        [
            tensors["means"],
            torch.zeros(n, 3),
            tensors["sh0"].reshape(n, 3),
            sh_rest,
            tensors["opacities"].reshape(n, 1),
            tensors["scales"],
            tensors["quats"],
        ],
        dim=1,
    )
    keep = columns.isfinite().all(dim=1) & (torch.sigmoid(tensors["opacities"]) >= opacity_threshold)
    columns = columns[keep].numpy()
    dtype = np.dtype([(name, "<f4") for name in _property_names(sh_rest.shape[1])])
    vertices = np.ascontiguousarray(columns).view(dtype).reshape(-1)
    with atomic_path(path) as tmp:
        plyfile.PlyData([plyfile.PlyElement.describe(vertices, "vertex")], byte_order="<").write(str(tmp))
    return len(vertices)


def read_gaussian_ply(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a 3DGS `.ply` (ours, gsplat's or the original code's) into raw parameter tensors.

    Normals are optional, since gsplat's exporter leaves them out.

    Args:
        path: the `.ply` file.

    Returns:
        float32 tensors keyed like `GaussianModel.params`: `means` [N, 3], `scales` [N, 3],
        `quats` [N, 4], `opacities` [N], `sh0` [N, 1, 3], `shN` [N, K, 3] with K = (d + 1)^2 - 1
        for the file's SH degree d.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if the file is not a complete 3DGS `.ply` (one line naming the file).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such Gaussian .ply file")

    def fail(reason: str) -> ValueError:
        return ValueError(f"{path}: not a 3DGS Gaussian .ply ({' '.join(reason.split())})")

    try:
        with open(path, "rb") as stream:
            ply = plyfile.PlyData.read(stream, mmap=False)
    except (plyfile.PlyParseError, ValueError, EOFError, UnicodeDecodeError) as error:
        raise fail(str(error) or type(error).__name__) from None
    if "vertex" not in ply:
        raise fail("no vertex element")
    vertex = ply["vertex"].data
    names = vertex.dtype.names
    missing = [name for name in _REQUIRED if name not in names]
    if missing:
        raise fail(f"missing properties {', '.join(missing)}")
    n_rest = sum(name.startswith("f_rest_") for name in names)
    degree = math.isqrt(n_rest // 3 + 1) - 1
    if n_rest != 3 * ((degree + 1) ** 2 - 1) or any(f"f_rest_{i}" not in names for i in range(n_rest)):
        raise fail(f"{n_rest} f_rest properties fit no SH degree")

    n = len(vertex)

    def stack(*columns: str) -> Tensor:
        out = np.empty((n, len(columns)), dtype=np.float32)
        for i, name in enumerate(columns):
            out[:, i] = vertex[name]
        return torch.from_numpy(out)

    return {
        "means": stack("x", "y", "z"),
        "scales": stack("scale_0", "scale_1", "scale_2"),
        "quats": stack("rot_0", "rot_1", "rot_2", "rot_3"),
        "opacities": stack("opacity")[:, 0],
        "sh0": stack("f_dc_0", "f_dc_1", "f_dc_2").view(n, 1, 3),
        "shN": stack(*(f"f_rest_{i}" for i in range(n_rest))).view(n, 3, n_rest // 3).transpose(1, 2).contiguous(),
    }
