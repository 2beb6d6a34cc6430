"""gsplat's MCMC relocation (Eq. 9 of "3D Gaussian Splatting as Markov Chain Monte Carlo") in
pure torch, so `MCMCStrategy` runs without CUDA.

gsplat's strategy ops call two CUDA kernels by name: the relocation (opacity and scale of
Gaussians split n ways) and the covariance of the noise injection. On CPU `torch_relocation()`
swaps in `compute_relocation_torch` and gsplat's own torch twin of the covariance for the
duration of a strategy step.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from gsplat.cuda import _torch_impl
from gsplat.strategy import ops
from torch import Tensor


def compute_relocation_torch(opacities: Tensor, scales: Tensor, ratios: Tensor, binoms: Tensor) -> tuple[Tensor, Tensor]:
    """Opacity and scale of each of the `ratios[i]` Gaussians that replace Gaussian i.

    new_opacity = 1 - (1 - o)^(1/n); new_scale = o / D * scale with
    D = sum_{i=1..n} sum_{k=0..i-1} C(i-1, k) (-1)^k / sqrt(k+1) * new_opacity^(k+1).
    Swapping the sums, D = sum_k M[n-1, k] (-1)^k / sqrt(k+1) new_opacity^(k+1) with M the
    column-wise cumulative sum of the binomial table; evaluated in float64 because the
    alternating terms cancel.

    Args:
        opacities: [N] in (0, 1).
        scales: [N, 3] linear scales.
        ratios: [N] split counts, clamped to [1, n_max] like gsplat does (in place).
        binoms: [n_max, n_max] binomial coefficients C(i, k).

    Returns:
        new_opacities [N] and new_scales [N, 3], in the inputs' dtype.
    """
    n_max = binoms.shape[0]
    ratios.clamp_(min=1, max=n_max)
    n = ratios.long()
    o = opacities.double()
    new_opacities = 1.0 - (1.0 - o) ** (1.0 / n.double())
    k = torch.arange(n_max, dtype=torch.float64, device=o.device)
    cumulative = binoms.double().cumsum(dim=0)  # [i, k]: sum of C(j, k) for j <= i
    signs = torch.where(k.long() % 2 == 0, 1.0, -1.0).to(o) / torch.sqrt(k + 1)
    powers = new_opacities[:, None] ** (k + 1)  # [N, n_max]
    denominator = (cumulative[n - 1] * signs * powers).sum(dim=-1)
    new_scales = (o / denominator)[:, None] * scales.double()
    return new_opacities.to(opacities.dtype), new_scales.to(scales.dtype)


@contextlib.contextmanager
def torch_relocation(device: torch.device) -> Iterator[None]:
    """Within the block, gsplat's strategy ops use torch code instead of their CUDA kernels when the
    Gaussians are not on CUDA (the kernels are used otherwise)."""
    if device.type == "cuda":
        yield
        return
    originals = ops.compute_relocation, ops.quat_scale_to_covar_preci
    ops.compute_relocation = compute_relocation_torch
    ops.quat_scale_to_covar_preci = _torch_impl._quat_scale_to_covar_preci
    try:
        yield
    finally:
        ops.compute_relocation, ops.quat_scale_to_covar_preci = originals
