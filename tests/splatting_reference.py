"""A dense reference for the tile rasterizer: every pixel against every Gaussian, no tiles.

Projection and SH evaluation come from gsplat's own pure-torch twins (`gsplat.cuda._torch_impl`),
compositing is the textbook front-to-back product written as simply as possible. It is slow and
memory hungry on purpose (C x N x H x W): the tests and the benchmark use it as ground truth.
"""

from __future__ import annotations

import torch
from torch import Tensor
from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci, _spherical_harmonics

PIXEL_CHUNK = 1024


def project_reference(
    means: Tensor, quats: Tensor, scales: Tensor, viewmats: Tensor, Ks: Tensor, width: int, height: int,
    near_plane: float = 0.01, far_plane: float = 1e10, eps2d: float = 0.3,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """gsplat's torch projection: radii [C, N, 2] (3.33 sigma), means2d [C, N, 2], depths [C, N],
    conics [C, N, 3]."""
    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_covar=True, compute_preci=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(
        means, covars, viewmats, Ks, width, height, eps2d=eps2d, near_plane=near_plane, far_plane=far_plane
    )
    return radii, means2d, depths, conics


def composite_dense(
    means2d: Tensor, conics: Tensor, opacities: Tensor, features: Tensor, depths: Tensor, visible: Tensor,
    width: int, height: int,
) -> tuple[Tensor, Tensor]:
    """Composites every visible Gaussian over every pixel, nearest first.

    Args:
        means2d: [C, N, 2]; conics: [C, N, 3]; opacities: [N]; features: [C, N, D];
        depths: [C, N]; visible: [C, N] bool.

    Returns:
        colors [C, H, W, D] and alphas [C, H, W, 1], without background.
    """
    rows, cols = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    pixels = torch.stack([cols.flatten(), rows.flatten()], dim=-1).to(means2d)  # [HW, 2]
    images, alphas = [], []
    for camera in range(means2d.shape[0]):
        ids = visible[camera].nonzero().squeeze(1)
        ids = ids[torch.argsort(depths[camera, ids], stable=True)]
        a, b, c = conics[camera, ids, :, None].unbind(1)
        image, alpha_sum = [], []
        for chunk in pixels.split(PIXEL_CHUNK):  # only to keep each tensor small (allocation cost)
            dx = chunk[None, :, 0] - means2d[camera, ids, 0, None]  # [V, pixels]
            dy = chunk[None, :, 1] - means2d[camera, ids, 1, None]
            sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
            alpha = torch.clamp_max(opacities[ids, None] * torch.exp(-sigma), 0.999)
            alpha = alpha * ((sigma >= 0) & (alpha >= 1.0 / 255.0))
            after = torch.cumprod(1.0 - alpha, dim=0)  # transmittance behind each Gaussian
            before = torch.cat([torch.ones_like(after[:1]), after[:-1]], dim=0)
            weights = alpha * before * (after > 1e-4)
            image.append(weights.T @ features[camera, ids])
            alpha_sum.append(weights.sum(0))
        images.append(torch.cat(image).view(height, width, -1))
        alphas.append(torch.cat(alpha_sum).view(height, width, 1))
    return torch.stack(images), torch.stack(alphas)


def render_reference(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor, viewmats: Tensor, Ks: Tensor,
    width: int, height: int, near_plane: float = 0.01, far_plane: float = 1e10, eps2d: float = 0.3,
    sh_degree: int | None = None, backgrounds: Tensor | None = None, render_mode: str = "RGB",
) -> tuple[Tensor, Tensor]:
    """The dense twin of `rasterize_gaussians_torch` (same arguments, no tiles, no radius_clip)."""
    n_cameras = viewmats.shape[0]
    radii, means2d, depths, conics = project_reference(means, quats, scales, viewmats, Ks, width, height, near_plane, far_plane, eps2d)
    visible = (radii > 0).all(dim=-1)
    if sh_degree is not None:
        centres = torch.linalg.inv(viewmats)[:, :3, 3]
        coefficients = colors if colors.dim() == 4 else colors[None].expand(n_cameras, -1, -1, -1)
        colors = torch.clamp_min(_spherical_harmonics(sh_degree, means[None] - centres[:, None], coefficients) + 0.5, 0.0)
    elif colors.dim() == 2:
        colors = colors[None].expand(n_cameras, -1, -1)
    if render_mode == "RGB":
        features = colors
    elif render_mode in ("D", "ED"):
        features = depths[..., None]
    else:
        features = torch.cat([colors, depths[..., None]], dim=-1)
    image, alpha = composite_dense(means2d, conics, opacities, features, depths, visible, width, height)
    if backgrounds is not None:
        if render_mode in ("D", "ED"):
            backgrounds = backgrounds.new_zeros(n_cameras, 1)
        elif render_mode != "RGB":
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(n_cameras, 1)], dim=-1)
        image = image + (1.0 - alpha) * backgrounds[:, None, None, :]
    if render_mode.endswith("ED"):
        image = torch.cat([image[..., :-1], image[..., -1:] / alpha.clamp_min(1e-10)], dim=-1)
    return image, alpha
