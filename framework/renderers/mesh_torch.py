"""A pure-torch triangle rasterizer with a z-buffer (the CPU twin of nvdiffrast's `rasterize`).

Cameras come from `framework.cameras.camera`: vertices go through
`CameraBatch.world_to_camera_opencv()` and `intrinsics()`, so pixel (row, col) has its centre at
(col + 0.5, row + 0.5) and row 0 is the top of the image, exactly like `CameraBatch.rays()`.

Triangles are binned by their pixel bounding boxes: only (face, pixel) pairs inside a box are
tested, in chunks of at most `max_pairs`, so memory stays bounded and the cost follows the covered
area rather than pixels x faces. Forward only: no gradients flow through the visibility test.
"""

from __future__ import annotations

import torch
from torch import Tensor

from framework.cameras.camera import CameraBatch

NEAR = 1e-3  # faces with a vertex closer than this to the camera plane are dropped (no clipping)
_DEGENERATE_AREA = 1e-12


def _project(vertices: Tensor, w2c: Tensor, K: Tensor) -> tuple[Tensor, Tensor]:
    """Pixel coordinates [V, 2] (x right, y down) and camera depth [V] of `vertices` [V, 3]."""
    camera = vertices @ w2c[:3, :3].T + w2c[:3, 3]
    depth = camera[:, 2]
    safe = torch.where(depth.abs() < NEAR, torch.full_like(depth, NEAR), depth)
    x = K[0, 0] * camera[:, 0] / safe + K[0, 2]
    y = K[1, 1] * camera[:, 1] / safe + K[1, 2]
    pixels = torch.stack([x, y], dim=-1)
    return pixels, depth


def _pixel_boxes(corners: Tensor, height: int, width: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """First column, first row, box width and box height [F] of the pixel centres each triangle's
    bounding box can cover; `corners` is [F, 3, 2]. Empty boxes have zero width or height."""
    low = corners.min(dim=1).values
    high = corners.max(dim=1).values
    col0 = torch.ceil(low[:, 0] - 0.5).clamp(0, width)
    row0 = torch.ceil(low[:, 1] - 0.5).clamp(0, height)
    col1 = torch.floor(high[:, 0] - 0.5).clamp(-1, width - 1)
    row1 = torch.floor(high[:, 1] - 0.5).clamp(-1, height - 1)
    box_w = (col1 - col0 + 1).clamp(min=0).long()
    box_h = (row1 - row0 + 1).clamp(min=0).long()
    return col0.long(), row0.long(), box_w, box_h


def _edge(a: Tensor, b: Tensor, p: Tensor) -> Tensor:
    """Twice the signed area of the triangle (a, b, p); all arguments [P, 2]."""
    return (b[:, 0] - a[:, 0]) * (p[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (p[:, 0] - a[:, 0])


def _rasterize_one(
    pixels: Tensor, depth: Tensor, faces: Tensor, height: int, width: int, max_pairs: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Face index [H*W], perspective-correct barycentrics [H*W, 3] and depth [H*W] for one camera."""
    n_pixels = height * width
    best_depth = torch.full((n_pixels,), float("inf"), dtype=pixels.dtype)
    best_face = torch.full((n_pixels,), -1, dtype=torch.long)
    best_bary = torch.zeros(n_pixels, 3, dtype=pixels.dtype)

    face_ids = torch.arange(faces.shape[0])
    in_front = (depth[faces] > NEAR).all(dim=1)
    corners = pixels[faces]  # [F, 3, 2]
    edge_a, edge_b = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    area = edge_a[:, 0] * edge_b[:, 1] - edge_a[:, 1] * edge_b[:, 0]
    col0, row0, box_w, box_h = _pixel_boxes(corners, height, width)
    keep = in_front & (area.abs() > _DEGENERATE_AREA) & (box_w > 0) & (box_h > 0)
    face_ids, col0, row0, box_w, box_h = face_ids[keep], col0[keep], row0[keep], box_w[keep], box_h[keep]
    if face_ids.numel() == 0:
        return best_face, best_bary, torch.zeros(n_pixels, dtype=pixels.dtype)

    counts = box_w * box_h
    cumulative = counts.cumsum(0)
    max_pairs = max(max_pairs, n_pixels)  # one face never needs more pairs than the image has
    start = 0
    while start < face_ids.numel():
        before = int(cumulative[start - 1]) if start > 0 else 0
        stop = max(start + 1, int(torch.searchsorted(cumulative, before + max_pairs, right=True)))
        chunk_counts = counts[start:stop]
        chunk_starts = chunk_counts.cumsum(0) - chunk_counts
        # One row per (face, candidate pixel) pair of this chunk's bounding boxes.
        pair_face = torch.repeat_interleave(torch.arange(start, stop), chunk_counts)
        offsets = torch.arange(pair_face.numel()) - torch.repeat_interleave(chunk_starts, chunk_counts)
        cols = col0[pair_face] + offsets % box_w[pair_face]
        rows = row0[pair_face] + offsets // box_w[pair_face]
        faces_here = face_ids[pair_face]
        start = stop

        tri = corners[faces_here]  # [P, 3, 2]
        point = torch.stack([cols, rows], dim=-1).to(pixels.dtype) + 0.5
        # Screen-space barycentrics from signed edge functions.
        w0 = _edge(tri[:, 1], tri[:, 2], point)
        w1 = _edge(tri[:, 2], tri[:, 0], point)
        w2 = _edge(tri[:, 0], tri[:, 1], point)
        screen = torch.stack([w0, w1, w2], dim=-1) / area[faces_here, None]
        inside = (screen >= 0).all(dim=-1)
        if not inside.any():
            continue
        screen, faces_here = screen[inside], faces_here[inside]
        pixel_index = rows[inside] * width + cols[inside]
        # Perspective-correct barycentrics and depth: 1/z is linear in screen space.
        weighted = screen / depth[faces[faces_here]]
        inverse_depth = weighted.sum(dim=-1)
        bary = weighted / inverse_depth[:, None]
        pair_depth = 1.0 / inverse_depth

        chunk_depth = torch.full((n_pixels,), float("inf"), dtype=pixels.dtype)
        chunk_depth.scatter_reduce_(0, pixel_index, pair_depth, reduce="amin")
        nearest = pair_depth == chunk_depth[pixel_index]
        # Ties (shared edges at equal depth) go to the highest face index, deterministically.
        chunk_face = torch.full((n_pixels,), -1, dtype=torch.long)
        chunk_face.scatter_reduce_(0, pixel_index[nearest], faces_here[nearest], reduce="amax")
        winner = nearest & (faces_here == chunk_face[pixel_index])
        win_pixel = pixel_index[winner]
        closer = chunk_depth[win_pixel] < best_depth[win_pixel]
        win_pixel = win_pixel[closer]
        best_depth[win_pixel] = pair_depth[winner][closer]
        best_face[win_pixel] = faces_here[winner][closer]
        best_bary[win_pixel] = bary[winner][closer]

    background = best_face < 0
    best_depth[background] = 0.0
    return best_face, best_bary, best_depth


@torch.no_grad()
def rasterize(
    vertices: Tensor, faces: Tensor, cameras: CameraBatch, max_pairs: int = 1 << 20
) -> tuple[Tensor, Tensor, Tensor]:
    """Rasterize a triangle mesh from every camera of a batch.

    Args:
        vertices: [V, 3] world positions.
        faces: [F, 3] vertex indices (either winding: there is no back-face culling).
        cameras: B cameras at one resolution H x W.
        max_pairs: most (face, pixel) candidate pairs tested at once (bounds memory).

    Returns:
        face_index: [B, H, W] long, the visible face, -1 on the background.
        barycentrics: [B, H, W, 3] perspective-correct weights of the face's vertices (0 on the
            background).
        depth: [B, H, W] camera-space z of the visible surface (0 on the background).
    """
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must be [V, 3], got shape {tuple(vertices.shape)}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be [F, 3], got shape {tuple(faces.shape)}")
    vertices = vertices.detach().to(device="cpu", dtype=torch.float32)
    faces = faces.to(device="cpu", dtype=torch.long)
    if faces.numel() and (faces.min() < 0 or faces.max() >= vertices.shape[0]):
        raise ValueError(
            f"faces index vertices {int(faces.min())}..{int(faces.max())} but there are {vertices.shape[0]}"
        )
    cpu_cameras = cameras.to("cpu")
    w2c = cpu_cameras.world_to_camera_opencv().float()
    K = cpu_cameras.intrinsics().float()
    height, width = cameras.height, cameras.width
    results = []
    for b in range(cameras.batch_size):
        pixels, depth = _project(vertices, w2c[b], K[b])
        results.append(_rasterize_one(pixels, depth, faces, height, width, max_pairs))
    face_index = torch.stack([r[0] for r in results]).view(-1, height, width)
    barycentrics = torch.stack([r[1] for r in results]).view(-1, height, width, 3)
    depth = torch.stack([r[2] for r in results]).view(-1, height, width)
    device = cameras.device
    return face_index.to(device), barycentrics.to(device), depth.to(device)


def interpolate(attributes: Tensor, faces: Tensor, face_index: Tensor, barycentrics: Tensor) -> Tensor:
    """Interpolate per-vertex attributes over the rasterized faces.

    Args:
        attributes: [V, C] per-vertex values.
        faces: [F, 3] vertex indices.
        face_index: [B, H, W] from `rasterize` (-1 = background).
        barycentrics: [B, H, W, 3] from `rasterize`.

    Returns:
        [B, H, W, C] interpolated values, 0 on the background.
    """
    covered = face_index >= 0
    corner_values = attributes[faces[face_index.clamp(min=0)]]  # [B, H, W, 3, C]
    values = (barycentrics[..., None] * corner_values).sum(dim=-2)
    return values * covered[..., None].to(values.dtype)
