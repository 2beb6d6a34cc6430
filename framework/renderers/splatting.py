"""3D Gaussian splatting with a backend switch: gsplat's CUDA kernels or our pure-torch twin.

Both backends take gsplat's arguments and return gsplat's `(render_colors, render_alphas, info)`
for the unpacked layout, so the densification strategies and the Gaussian renderer do not care
which one ran. Inputs are checked here once, with errors that name the bad argument.
"""

from __future__ import annotations

import torch
from gsplat import rasterization
from torch import Tensor

from framework.renderers.splatting_torch import rasterize_gaussians_torch

BACKENDS = ("auto", "torch", "cuda")
RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")


def _check_shape(name: str, tensor: Tensor, expected: tuple[int | None, ...], layout: str) -> None:
    """Raises a ValueError unless `tensor` has `expected` shape (None matches any size)."""
    shape = tuple(tensor.shape)
    if len(shape) != len(expected) or any(e is not None and s != e for s, e in zip(shape, expected)):
        raise ValueError(f"{name} must be {layout}, got shape {list(shape)}")


def _validate(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    sh_degree: int | None,
    tile_size: int,
    backgrounds: Tensor | None,
    render_mode: str,
) -> None:
    _check_shape("means", means, (None, 3), "[N, 3]")
    _check_shape("viewmats", viewmats, (None, 4, 4), "[C, 4, 4]")
    n, c = means.shape[0], viewmats.shape[0]
    _check_shape("quats", quats, (n, 4), f"[N, 4] with N = {n}")
    _check_shape("scales", scales, (n, 3), f"[N, 3] with N = {n}")
    _check_shape("opacities", opacities, (n,), f"[N] with N = {n}")
    _check_shape("Ks", Ks, (c, 3, 3), f"[C, 3, 3] with C = {c}")
    if sh_degree is None:
        if colors.dim() == 2:
            _check_shape("colors", colors, (n, None), f"[N, D] or [C, N, D] with N = {n}, C = {c}")
        else:
            _check_shape("colors", colors, (c, n, None), f"[N, D] or [C, N, D] with N = {n}, C = {c}")
    else:
        if sh_degree < 0:
            raise ValueError(f"sh_degree must be >= 0 or None, got {sh_degree}")
        layout = f"SH coefficients [N, K, 3] or [C, N, K, 3] with N = {n}, C = {c}, K >= {(sh_degree + 1) ** 2}"
        _check_shape("colors", colors, (n, None, 3) if colors.dim() == 3 else (c, n, None, 3), layout)
        if colors.shape[-2] < (sh_degree + 1) ** 2:
            raise ValueError(f"colors must be {layout} for sh_degree={sh_degree}, got shape {list(colors.shape)}")
    if not isinstance(width, int) or not isinstance(height, int) or width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive ints, got width={width!r}, height={height!r}")
    if not isinstance(tile_size, int) or tile_size <= 0:
        raise ValueError(f"tile_size must be a positive int, got {tile_size!r}")
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    if backgrounds is not None:
        channels = 3 if sh_degree is not None else colors.shape[-1]
        _check_shape("backgrounds", backgrounds, (c, channels), f"[C, D] with C = {c}, D = {channels}")


def rasterize_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: int | None = None,
    tile_size: int = 16,
    backgrounds: Tensor | None = None,
    render_mode: str = "RGB",
    backend: str = "auto",
) -> tuple[Tensor, Tensor, dict]:
    """Renders 3D Gaussians into C pinhole cameras (gsplat's `rasterization`, unpacked, classic).

    Args:
        means: [N, 3]; quats: [N, 4] wxyz; scales: [N, 3] linear; opacities: [N] in [0, 1].
        colors: [N, D] or [C, N, D], or SH coefficients [N, K, 3] / [C, N, K, 3] with `sh_degree`.
        viewmats: [C, 4, 4] OpenCV world-to-camera; Ks: [C, 3, 3] intrinsics.
        width, height, near_plane, far_plane, radius_clip, eps2d, sh_degree, tile_size,
            backgrounds ([C, D]), render_mode: as `gsplat.rasterization`.
        backend: "cuda" runs gsplat's kernels, "torch" our CPU twin, "auto" picks "cuda" for CUDA
            tensors and "torch" otherwise.

    Returns:
        render_colors [C, H, W, D'], render_alphas [C, H, W, 1] and gsplat's info dict (with
        `means2d` [C, N, 2], `radii` [C, N, 2], `width`, `height`, `n_cameras`, ...).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "cuda" and not (torch.cuda.is_available() and means.is_cuda):
        raise ValueError(f"backend=cuda needs CUDA and CUDA tensors (CUDA available: {torch.cuda.is_available()}, means on {means.device}); use backend=torch")
    _validate(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, tile_size, backgrounds, render_mode)
    options = dict(
        near_plane=near_plane,
        far_plane=far_plane,
        radius_clip=radius_clip,
        eps2d=eps2d,
        sh_degree=sh_degree,
        tile_size=tile_size,
        backgrounds=backgrounds,
        render_mode=render_mode,
    )
    if backend == "cuda" or (backend == "auto" and means.is_cuda):
        return rasterization(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height, packed=False, rasterize_mode="classic", **options
        )
    return rasterize_gaussians_torch(means, quats, scales, opacities, colors, viewmats, Ks, width, height, **options)
