"""A pure-torch, tile-based 3D Gaussian splatting rasterizer: the CPU twin of
`gsplat.rasterization(..., packed=False, rasterize_mode="classic")` for pinhole cameras.

gsplat's own torch reference still calls a CUDA kernel to rasterize, so the CPU path is ours. The
stages and their outputs mirror gsplat's, so `info` feeds `gsplat.strategy.DefaultStrategy` and
`MCMCStrategy` unchanged:

1. `project_gaussians`: EWA projection with the `eps2d` low-pass, opacity-aware 3.33-sigma radii
   and the same culling (near/far plane, degenerate or too faint, `radius_clip`, off-image).
2. `intersect_tiles`: every visible Gaussian is binned into the tiles its 2D box touches and the
   (tile, Gaussian) intersections are sorted by camera, tile and depth.
3. `rasterize_to_pixels`: each tile's list is walked front to back in slabs of `SLAB_LENGTH`
   Gaussians, several tiles padded into one dense block (bounded in memory); the alpha of every
   (intersection, pixel) pair comes from the conic, the transmittance from a cumulative sum of
   log(1 - alpha) carried from slab to slab, and one batched matmul composites weights x
   features. A tile whose pixels are all saturated leaves the walk, as gsplat's threads do.
   Plain autograd gives the gradients.

Per pixel the maths is gsplat's: alpha = min(0.999, opacity * exp(-sigma)), skipped below 1/255,
and compositing stops before the Gaussian that would take the transmittance to <= 1e-4.
"""

from __future__ import annotations

import bisect
import math

import numpy as np
import torch
import torch.nn.functional as F
from gsplat.cuda._torch_impl import _spherical_harmonics
from torch import Tensor

ALPHA_THRESHOLD = 1.0 / 255.0
MAX_ALPHA = 0.999
MIN_TRANSMITTANCE = 1e-4
EXTENT_SIGMAS = 3.33
BLOCK_ELEMENTS = 1 << 20  # (intersection, pixel) pairs evaluated at once: bounds transient memory
SLAB_LENGTH = 64  # Gaussians per tile composited before checking whether the tile is saturated

_ALPHA_CUTOFF = float(np.nextafter(np.float32(ALPHA_THRESHOLD), np.float32(0)))  # keep alpha >= 1/255
_LOG_MAX_ALPHA = math.log(MAX_ALPHA)
_LOG_MIN_TRANSMITTANCE = math.log(MIN_TRANSMITTANCE)
_MASKED_LOG = -1e4  # exp() of it is exactly zero: padding slots, saturated pixels


def quat_scale_to_matrix(quats: Tensor, scales: Tensor) -> Tensor:
    """R @ diag(scales), the square root of each Gaussian's covariance.

    Args:
        quats: [N, 4] wxyz quaternions, not necessarily normalised.
        scales: [N, 3] linear scales.

    Returns:
        [N, 3, 3] matrices M with covariance M @ M^T.
    """
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    rotation = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).view(*quats.shape[:-1], 3, 3)
    return rotation * scales[..., None, :]


def project_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    opacities: Tensor | None = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """EWA projection of 3D Gaussians into pinhole cameras, as gsplat's `fully_fused_projection`.

    The Jacobian is evaluated at the mean clamped to the field of view widened by 30% on each side
    (as gsplat does, so Gaussians far off-screen do not blow up). With `opacities` the box extent shrinks to where
    alpha falls below 1/255 (and Gaussians fainter than that are culled); without, it is 3.33 sigma.

    Args:
        means: [N, 3] world positions.
        quats: [N, 4] wxyz rotations.
        scales: [N, 3] linear scales.
        viewmats: [C, 4, 4] OpenCV world-to-camera matrices.
        Ks: [C, 3, 3] intrinsics.
        width, height: image size in pixels.
        opacities: [N] optional, for the opacity-aware radii.
        near_plane, far_plane: depth range kept.
        radius_clip: Gaussians whose radii are both <= this (pixels) are culled.
        eps2d: added to the 2D covariance's diagonal (the low-pass filter).

    Returns:
        radii: [C, N, 2] int32 half sides of the 2D boxes, 0 where culled.
        means2d: [C, N, 2] pixel positions, zero where culled.
        depths: [C, N] camera z, zero where culled.
        conics: [C, N, 3] the inverse 2D covariance (xx, xy, yy), zero where culled.
    """
    rotation, translation = viewmats[:, :3, :3], viewmats[:, :3, 3]
    means_c = torch.einsum("cij,nj->cni", rotation, means) + translation[:, None, :]  # [C, N, 3]
    x, y, z = means_c.unbind(-1)
    in_depth = (z >= near_plane) & (z <= far_plane)
    z = torch.where(in_depth, z, torch.ones_like(z))  # keeps gradients finite behind the camera

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    lim_x = 0.3 * 0.5 * width / fx
    lim_y = 0.3 * 0.5 * height / fy
    slope_x = torch.minimum(torch.maximum(x / z, -(cx / fx + lim_x)), (width - cx) / fx + lim_x)
    slope_y = torch.minimum(torch.maximum(y / z, -(cy / fy + lim_y)), (height - cy) / fy + lim_y)
    # Rows of J @ R_view: the 2D covariance is (J R M)(J R M)^T with M = R_gauss S.
    row_x = (fx / z)[..., None] * (rotation[:, None, 0, :] - slope_x[..., None] * rotation[:, None, 2, :])
    row_y = (fy / z)[..., None] * (rotation[:, None, 1, :] - slope_y[..., None] * rotation[:, None, 2, :])
    sqrt_cov = quat_scale_to_matrix(quats, scales)  # [N, 3, 3]
    u = torch.einsum("cni,nij->cnj", row_x, sqrt_cov)
    v = torch.einsum("cni,nij->cnj", row_y, sqrt_cov)
    cov_xx = (u * u).sum(-1) + eps2d
    cov_xy = (u * v).sum(-1)
    cov_yy = (v * v).sum(-1) + eps2d
    det = cov_xx * cov_yy - cov_xy * cov_xy
    safe_det = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([cov_yy, -cov_xy, cov_xx], dim=-1) / safe_det[..., None]
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)

    with torch.no_grad():
        visible = in_depth & (det > 0)
        extent = torch.full_like(det, EXTENT_SIGMAS)
        if opacities is not None:
            bright = opacities >= ALPHA_THRESHOLD
            visible &= bright[None, :]
            ratio = torch.where(bright, opacities / ALPHA_THRESHOLD, torch.ones_like(opacities))
            extent = torch.clamp_max(torch.sqrt(2.0 * torch.log(ratio)), EXTENT_SIGMAS).expand_as(det)
        radius = torch.ceil(extent[..., None] * torch.stack([cov_xx, cov_yy], dim=-1).clamp_min(0).sqrt())
        visible &= (radius > radius_clip).any(dim=-1)
        m = means2d.detach()
        visible &= (m[..., 0] + radius[..., 0] > 0) & (m[..., 0] - radius[..., 0] < width)
        visible &= (m[..., 1] + radius[..., 1] > 0) & (m[..., 1] - radius[..., 1] < height)
        radii = torch.where(visible[..., None], radius, torch.zeros_like(radius)).int()

    keep = visible[..., None]
    means2d = torch.where(keep, means2d, torch.zeros_like(means2d))
    conics = torch.where(keep, conics, torch.zeros_like(conics))
    depths = torch.where(visible, means_c[..., 2], torch.zeros_like(det))
    return radii, means2d, depths, conics


@torch.no_grad()
def intersect_tiles(
    means2d: Tensor, radii: Tensor, depths: Tensor, tile_size: int, tile_width: int, tile_height: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Bins Gaussians into the tiles their 2D boxes touch, sorted by (camera, tile, depth).

    Args:
        means2d: [C, N, 2] pixel positions.
        radii: [C, N, 2] box half sides, 0 for culled Gaussians.
        depths: [C, N] camera z.
        tile_size: tile side in pixels.
        tile_width, tile_height: number of tiles across and down.

    Returns:
        tiles_per_gauss: [C, N] int32 tiles each Gaussian touches.
        isect_ids: [M] int64 sort keys, gsplat's layout: camera | tile | depth bits.
        flatten_ids: [M] int32 index of each intersection's Gaussian in the flattened [C * N].
        isect_offsets: [C, tile_height, tile_width] int32 start of each tile's run in the lists.
    """
    n_cameras, n = depths.shape
    n_tiles = tile_width * tile_height
    visible = (radii > 0).all(dim=-1).flatten()
    flat = visible.nonzero().squeeze(1)
    centre = means2d.detach().reshape(-1, 2)[flat] / tile_size
    extent = radii.reshape(-1, 2)[flat].float() / tile_size
    limits = torch.tensor([tile_width, tile_height], device=flat.device)
    low = torch.minimum(torch.floor(centre - extent).long().clamp_min(0), limits)
    high = torch.minimum(torch.ceil(centre + extent).long().clamp_min(0), limits)
    span = high - low  # [V, 2]
    counts = span[:, 0] * span[:, 1]
    tiles_per_gauss = torch.zeros(n_cameras * n, dtype=torch.int32, device=flat.device)
    tiles_per_gauss[flat] = counts.int()

    owner = torch.repeat_interleave(torch.arange(flat.numel(), device=flat.device), counts)
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(owner.numel(), device=flat.device) - first[owner]
    columns = span[owner, 0]
    tile_x = low[owner, 0] + local % columns
    tile_y = low[owner, 1] + local // columns
    flatten_ids = flat[owner]
    camera = flatten_ids // n
    tile = tile_y * tile_width + tile_x
    depth_bits = depths.detach().reshape(-1)[flatten_ids].float().view(torch.int32).long() & 0xFFFFFFFF
    isect_ids = (camera << (32 + n_tiles.bit_length())) | (tile << 32) | depth_bits
    isect_ids, order = torch.sort(isect_ids, stable=True)
    flatten_ids = flatten_ids[order]

    per_tile = torch.bincount(camera * n_tiles + tile, minlength=n_cameras * n_tiles)
    isect_offsets = (torch.cumsum(per_tile, 0) - per_tile).view(n_cameras, tile_height, tile_width)
    return tiles_per_gauss.view(n_cameras, n), isect_ids, flatten_ids.int(), isect_offsets.int()


def _composite_slab(
    table: Tensor,
    flatten_ids: Tensor,
    starts: Tensor,
    lengths: Tensor,
    tiles: Tensor,
    in_front: Tensor | None,
    tile_size: int,
    tile_width: int,
    clamp_alpha: bool,
) -> tuple[Tensor, Tensor]:
    """Front-to-back compositing of one depth slab of several tiles' lists, padded to a block.

    Args:
        table: [C * N, 6 + D] per-Gaussian means2d (2), conic (3), opacity (1), features (D).
        flatten_ids: [M] sorted intersection list.
        starts, lengths: [S] where each tile's slab begins in the list and how long it is.
        tiles: [S] tile index within its camera.
        in_front: [S, P] log transmittance left by the earlier slabs, None for the first.
        tile_size, tile_width: tile side in pixels, tiles per image row.
        clamp_alpha: cap alpha at 0.999; only needed when an opacity exceeds it (sigma >= 0).

    Returns:
        [S, P, D + 1] composited features and, last, alpha of each tile's P = tile_size^2 pixels;
        [S, P] log transmittance behind the slab.
    """
    length = int(lengths.max())
    slot = torch.arange(length, device=table.device)
    filled = slot[None, :] < lengths[:, None]  # [S, L]
    index = torch.where(filled, starts[:, None] + slot[None, :], starts[:, None])
    gauss = table.index_select(0, flatten_ids[index.flatten()].long()).view(*index.shape, -1)  # [S, L, K]
    mean, conic, opacity, features = gauss[..., :2], gauss[..., 2:5], gauss[..., 5], gauss[..., 6:]
    log_opacity = torch.where(filled, torch.log(opacity), torch.full_like(opacity, _MASKED_LOG))

    offsets = torch.arange(tile_size, device=table.device, dtype=table.dtype) + 0.5
    origin_x = ((tiles % tile_width) * tile_size).to(table.dtype)
    origin_y = ((tiles // tile_width) * tile_size).to(table.dtype)
    dx = origin_x[:, None, None] + offsets - mean[..., 0, None]  # [S, L, T] per column
    dy = origin_y[:, None, None] + offsets - mean[..., 1, None]  # [S, L, T] per row
    # log alpha = log opacity - sigma, sigma = (a dx^2 + c dy^2) / 2 + b dx dy, split into
    # per-column and per-row factors so only two ops touch the full [S, L, T, T] grid.
    by_column = log_opacity[..., None] - 0.5 * conic[..., 0, None] * dx * dx
    by_row = -0.5 * conic[..., 2, None] * dy * dy
    cross = -conic[..., 1, None] * dx
    log_alpha = torch.addcmul(by_column[..., None, :] + by_row[..., :, None], cross[..., None, :], dy[..., :, None])
    log_alpha = log_alpha.flatten(-2)  # [S, L, P], pixel p = row * T + column

    if clamp_alpha:
        log_alpha = log_alpha.clamp_max(_LOG_MAX_ALPHA)
    # F.threshold is a fused compare-and-select: far cheaper on CPU than torch.where.
    alpha = F.threshold(torch.exp(log_alpha), _ALPHA_CUTOFF, 0.0)
    log_survive = torch.log1p(-alpha)
    log_behind = torch.cumsum(log_survive, dim=1)  # log transmittance behind each Gaussian
    if in_front is not None:
        log_behind = log_behind + in_front[:, None, :]
    # A Gaussian that would take the transmittance to <= 1e-4 and all behind it are dropped.
    masked = F.threshold(log_behind, _LOG_MIN_TRANSMITTANCE, _MASKED_LOG)
    weights = alpha * torch.exp(masked - log_survive)

    features = torch.cat([features, torch.ones_like(features[..., :1])], dim=-1)  # [S, L, D + 1]
    return torch.bmm(weights.transpose(1, 2), features), log_behind[:, -1]


def rasterize_to_pixels(
    means2d: Tensor,
    conics: Tensor,
    colors: Tensor,
    opacities: Tensor,
    width: int,
    height: int,
    tile_size: int,
    isect_offsets: Tensor,
    flatten_ids: Tensor,
    backgrounds: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Composites the binned Gaussians into images, as gsplat's `rasterize_to_pixels`.

    Args:
        means2d: [C, N, 2] pixel positions.
        conics: [C, N, 3] inverse 2D covariances.
        colors: [C, N, D] features.
        opacities: [C, N] in [0, 1].
        width, height: image size.
        tile_size: tile side in pixels.
        isect_offsets: [C, tile_height, tile_width] from `intersect_tiles`.
        flatten_ids: [M] from `intersect_tiles`.
        backgrounds: [C, D] optional, added as (1 - alpha) * background.

    Returns:
        render_colors: [C, H, W, D].
        render_alphas: [C, H, W, 1].
    """
    n_cameras, tile_height, tile_width = isect_offsets.shape
    channels = colors.shape[-1]
    pixels = tile_size * tile_size
    table = torch.cat([means2d, conics, opacities[..., None], colors], dim=-1).flatten(0, 1)

    n_tiles = tile_width * tile_height
    starts = isect_offsets.flatten().long()
    counts = torch.diff(starts, append=starts.new_tensor([flatten_ids.numel()]))
    clamp_alpha = bool(opacities.numel() and opacities.max() > MAX_ALPHA)
    occupied = counts.nonzero().squeeze(1)
    occupied = occupied[torch.argsort(counts[occupied], descending=True, stable=True)]
    occupied_counts = counts[occupied]
    tiles = occupied % n_tiles
    with torch.no_grad():  # pixels of border tiles that fall outside the image never saturate
        offsets = torch.arange(tile_size, device=occupied.device)
        columns = (tiles % tile_width * tile_size)[:, None] + offsets
        rows = (tiles // tile_width * tile_size)[:, None] + offsets
        outside = ((rows[:, :, None] >= height) | (columns[:, None, :] >= width)).flatten(1)  # [O, P]

    # Lists are walked in depth slabs, like gsplat's shared-memory batches: a tile leaves once
    # all its pixels are saturated, and each slab is split into blocks bounded in memory.
    group = max(1, BLOCK_ELEMENTS // (SLAB_LENGTH * pixels))
    descending = [-count for count in occupied_counts.tolist()]  # ascending, for bisect
    log_transmittance = table.new_zeros(occupied.numel(), pixels)
    active = torch.ones(occupied.numel(), dtype=torch.bool, device=occupied.device)
    touched, partials = [], []
    for begin in range(0, -descending[0] if descending else 0, SLAB_LENGTH):
        longer = bisect.bisect_left(descending, -begin)  # the tiles with more than `begin` Gaussians
        rows_left = active[:longer].nonzero().squeeze(1)
        if rows_left.numel() == 0:
            break
        for block in rows_left.split(group):
            tile_ids = occupied[block]
            lengths = (occupied_counts[block] - begin).clamp_max(SLAB_LENGTH)
            in_front = log_transmittance[block] if begin else None
            partial, behind = _composite_slab(
                table, flatten_ids, starts[tile_ids] + begin, lengths, tiles[block], in_front, tile_size, tile_width, clamp_alpha
            )
            partials.append(partial)
            touched.append(tile_ids)
            log_transmittance = log_transmittance.index_copy(0, block, behind)
        with torch.no_grad():
            active &= ((log_transmittance <= _LOG_MIN_TRANSMITTANCE) | outside).all(dim=1).logical_not()

    canvas = table.new_zeros(n_cameras * n_tiles, pixels, channels + 1)
    if partials:
        canvas = canvas.index_add(0, torch.cat(touched), torch.cat(partials))
    elif table.requires_grad:  # nothing on screen: stay in the graph (zero gradients), as gsplat does
        canvas = canvas + 0.0 * table.sum()
    image = canvas.view(n_cameras, tile_height, tile_width, tile_size, tile_size, channels + 1)
    image = image.permute(0, 1, 3, 2, 4, 5).reshape(n_cameras, tile_height * tile_size, tile_width * tile_size, -1)
    image = image[:, :height, :width]
    render_colors, render_alphas = image[..., :channels], image[..., channels:]
    if backgrounds is not None:
        render_colors = render_colors + (1.0 - render_alphas) * backgrounds[:, None, None, :]
    return render_colors, render_alphas


def rasterize_gaussians_torch(
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
) -> tuple[Tensor, Tensor, dict]:
    """Renders 3D Gaussians into C pinhole cameras: `gsplat.rasterization` (unpacked, classic) in
    pure torch, on any device. Inputs are assumed valid (`splatting.rasterize_gaussians` checks them).

    Args:
        means: [N, 3] world positions.
        quats: [N, 4] wxyz rotations, not necessarily normalised.
        scales: [N, 3] linear (activated) scales.
        opacities: [N] in [0, 1].
        colors: [N, D] or [C, N, D] features, or with `sh_degree` SH coefficients [N, K, 3] or
            [C, N, K, 3], evaluated towards each camera centre (+0.5, clamped at 0, as gsplat).
        viewmats: [C, 4, 4] OpenCV world-to-camera matrices.
        Ks: [C, 3, 3] intrinsics.
        width, height: image size in pixels.
        near_plane, far_plane, radius_clip, eps2d: as `project_gaussians`.
        sh_degree: SH degree to evaluate, None for plain features.
        tile_size: tile side for binning.
        backgrounds: [C, D] optional background colours.
        render_mode: "RGB", "D" (accumulated depth), "ED" (expected depth), "RGB+D" or "RGB+ED";
            depth modes append one channel.

    Returns:
        render_colors: [C, H, W, D'] with D' = D, 1 or D + 1 by `render_mode`.
        render_alphas: [C, H, W, 1].
        info: gsplat's meta dict; `means2d` [C, N, 2] is the tensor that was rasterized, so its
            `.grad` (after `retain_grad()`) is the 2D positional gradient the strategies read.
    """
    n_cameras = viewmats.shape[0]
    radii, means2d, depths, conics = project_gaussians(
        means, quats, scales, viewmats, Ks, width, height, opacities, near_plane, far_plane, radius_clip, eps2d
    )
    opacities = opacities[None, :].expand(n_cameras, -1)

    if sh_degree is not None:
        camera_centres = torch.linalg.inv(viewmats)[:, :3, 3]
        directions = means[None, :, :] - camera_centres[:, None, :]  # [C, N, 3]
        coefficients = colors if colors.dim() == 4 else colors[None].expand(n_cameras, -1, -1, -1)
        colors = torch.clamp_min(_spherical_harmonics(sh_degree, directions, coefficients) + 0.5, 0.0)
    elif colors.dim() == 2:
        colors = colors[None].expand(n_cameras, -1, -1)

    if render_mode in ("RGB+D", "RGB+ED"):
        colors = torch.cat([colors, depths[..., None]], dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(n_cameras, 1)], dim=-1)
    elif render_mode in ("D", "ED"):
        colors = depths[..., None]
        if backgrounds is not None:
            backgrounds = backgrounds.new_zeros(n_cameras, 1)

    tile_width, tile_height = math.ceil(width / tile_size), math.ceil(height / tile_size)
    tiles_per_gauss, isect_ids, flatten_ids, isect_offsets = intersect_tiles(
        means2d, radii, depths, tile_size, tile_width, tile_height
    )
    render_colors, render_alphas = rasterize_to_pixels(
        means2d, conics, colors, opacities, width, height, tile_size, isect_offsets, flatten_ids, backgrounds
    )
    if render_mode in ("ED", "RGB+ED"):
        expected = render_colors[..., -1:] / render_alphas.clamp_min(1e-10)
        render_colors = torch.cat([render_colors[..., :-1], expected], dim=-1)

    info = {
        "batch_ids": None,
        "camera_ids": None,
        "gaussian_ids": None,
        "radii": radii,
        "means2d": means2d,
        "depths": depths,
        "conics": conics,
        "opacities": opacities,
        "tile_width": tile_width,
        "tile_height": tile_height,
        "tiles_per_gauss": tiles_per_gauss,
        "isect_ids": isect_ids,
        "flatten_ids": flatten_ids,
        "isect_offsets": isect_offsets,
        "width": width,
        "height": height,
        "tile_size": tile_size,
        "n_batches": 1,
        "n_cameras": n_cameras,
    }
    return render_colors, render_alphas, info
