"""Differentiable triangle rasterization with nvdiffrast's four primitives.

`MeshRasterizer` offers `rasterize`, `interpolate`, `texture` and `antialias` with nvdiffrast's
arguments and semantics, run by nvdiffrast (`backend="cuda"`, a `RasterizeCudaContext`) or by the
pure-torch code below (`backend="torch"`, any device); `"auto"` picks nvdiffrast for CUDA inputs
when it is installed. Differences from nvdiffrast itself:

- Image rows: row 0 of every image this module returns is the TOP of the image (clip-space
  y = +1), as in `CameraBatch.rays()` and every other renderer here; nvdiffrast puts row 0 at
  y = -1. The CUDA path negates clip y before calling nvdiffrast (`_nvdiffrast_positions`, the one
  place the flip happens), which leaves triangle ids and barycentrics unchanged.
- `rasterize` and `interpolate` return only the image, not nvdiffrast's screen-space derivative
  outputs: there is no mipmapped filtering to use them.
- The torch path's rasterize passes gradients through all of u, v and z/w.

Conventions shared by both paths: `rast[..., :4] = (u, v, z/w, triangle_id + 1)`, all zero where
no triangle covers the pixel; an attribute interpolates as `u a0 + v a1 + (1 - u - v) a2`
(perspective-correct); pixel (row, col) has its centre at NDC
`x = 2 (col + 0.5) / W - 1`, `y = 1 - 2 (row + 0.5) / H`; triangles are clipped to
-w <= z <= w (near and far planes). Texture coordinates follow nvdiffrast: u along a texture's
width, v along its rows with v = 0 at row 0, texel centres at `(i + 0.5) / size`.

The torch rasterizer works in homogeneous 2D coordinates, so triangles crossing the camera plane
need no clipping: for a triangle with clip corners c_i (x, y, w), the functions
`e_i(p) = (c_j x c_k) . (x_ndc, y_ndc, 1)` are proportional to the perspective-correct
barycentrics, a pixel is covered when all three share the sign of det(c_0, c_1, c_2), and z/w is
affine in the pixel. Visibility (which triangle wins a pixel) is found without gradients by a
binned z-buffer; the winners' barycentrics are then recomputed from `pos_clip` with autograd, so
gradients reach vertex positions through `interpolate` and `antialias`, as in nvdiffrast.
"""

from __future__ import annotations

import functools
import sys
from types import ModuleType

import torch
import torch.nn.functional as F
import torch.utils.cpp_extension
from torch import Tensor

from framework.cameras.camera import CameraBatch

_BACKENDS = ("auto", "torch", "cuda")
_DEGENERATE = 1e-12  # |det| below this times the corners' scale cubed: a zero-area triangle
_EDGE_SLACK = 1e-5  # barycentric tolerance, so rounding leaves no holes along shared edges


@functools.cache
def _import_nvdiffrast() -> ModuleType | None:
    try:
        import nvdiffrast.torch as dr
    except ImportError:
        return None
    _find_plugin_after_build(dr)
    return dr


def _find_plugin_after_build(dr: ModuleType) -> None:
    """nvdiffrast 0.3.3 builds its CUDA plugin with torch's JIT loader and then imports it by name,
    which fails with current torch because the build folder is not on sys.path (seen with torch
    2.11; fixed upstream by NVlabs/nvdiffrast#228). Put the folder on the path and retry once."""
    build_plugin = dr.ops._get_plugin

    def get_plugin(gl: bool = False) -> ModuleType:
        try:
            return build_plugin(gl)
        except ModuleNotFoundError as error:
            if not (error.name or "").startswith("nvdiffrast_plugin"):
                raise
            sys.path.append(torch.utils.cpp_extension._get_build_directory(error.name, verbose=False))
            return build_plugin(gl)

    dr.ops._get_plugin = get_plugin


def clip_positions(vertices: Tensor, cameras: CameraBatch, near: float = 0.1, far: float = 100.0) -> Tensor:
    """Clip-space positions of world points as seen by each camera.

    Args:
        vertices: [V, 3] world positions.
        cameras: B cameras.
        near, far: clipping planes of `CameraBatch.projection_opengl`.

    Returns:
        [B, V, 4] homogeneous clip coordinates (w = the camera-space depth).
    """
    clip_from_world = cameras.projection_opengl(near, far) @ torch.linalg.inv(cameras.c2w)
    homogeneous = torch.cat([vertices, torch.ones_like(vertices[:, :1])], dim=-1)
    return torch.einsum("bij,vj->bvi", clip_from_world.to(vertices.dtype), homogeneous)


def face_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """[F, 3] face normals of length twice the face's area (outwards for faces counter-clockwise
    seen from outside); differentiable in `vertices`."""
    corners = vertices[faces]
    return torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0], dim=-1)


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """[V, 3] area-weighted unit vertex normals of a mesh ([V, 3] vertices, [F, 3] faces,
    counter-clockwise seen from outside); differentiable in `vertices`. Vertices at the same
    position (copies along UV seams) share one normal, so seams do not show in the shading."""
    _, welded = torch.unique(vertices.detach(), dim=0, return_inverse=True)
    area_weighted = face_normals(vertices, faces).repeat_interleave(3, dim=0)
    sums = torch.zeros_like(vertices).index_add(0, welded[faces.reshape(-1)], area_weighted)
    return F.normalize(sums[welded], dim=-1)


def _pixel_ndc(index: Tensor, height: int, width: int) -> Tensor:
    """[N, 3] homogeneous NDC (x, y, 1) of pixel centres given flat indices `row * W + col`."""
    rows, cols = index // width, index % width
    x = 2.0 * (cols + 0.5) / width - 1.0
    y = 1.0 - 2.0 * (rows + 0.5) / height
    return torch.stack([x, y, torch.ones_like(x)], dim=-1)


def _edge_functions(corners: Tensor) -> tuple[Tensor, Tensor]:
    """Edge-function rows and determinants of triangles in homogeneous 2D.

    Args:
        corners: [..., 3, 4] clip positions of each triangle's corners.

    Returns:
        normals: [..., 3, 3]; row i is `c_{i+1} x c_{i+2}` over (x, y, w), the line through the
            edge opposite corner i, so `normals @ (x, y, 1)` is proportional to the barycentrics.
        det: [...] det(c_0, c_1, c_2); its sign is the triangle's screen-space winding.
    """
    xyw = corners[..., [0, 1, 3]]
    normals = torch.linalg.cross(xyw.roll(-1, dims=-2), xyw.roll(-2, dims=-2), dim=-1)
    det = (xyw[..., 0, :] * normals[..., 0, :]).sum(-1)
    return normals, det


def _visible_faces(pos: Tensor, tri: Tensor, height: int, width: int, max_pairs: int) -> Tensor:
    """Binned z-buffer: the nearest covering triangle of every pixel of one image, no gradients.

    Triangles are binned by their pixel bounding boxes (the whole image when a corner is behind
    the camera); only (triangle, pixel) pairs inside a box are tested, in chunks of at most
    `max_pairs`, so memory stays bounded and the cost follows the covered area.

    Args:
        pos: [V, 4] clip positions.
        tri: [F, 3] long vertex indices.

    Returns:
        [H * W] long triangle index per pixel, -1 where none covers it.
    """
    device, dtype = pos.device, pos.dtype
    n_pixels = height * width
    best_depth = torch.full((n_pixels,), float("inf"), dtype=dtype, device=device)
    best_face = torch.full((n_pixels,), -1, dtype=torch.long, device=device)

    corners = pos[tri]  # [F, 3, 4]
    normals, det = _edge_functions(corners)
    normals = normals * det.sign()[:, None, None]  # covered <=> all three rows give >= 0
    z_plane = (corners[..., 2:3] * normals).sum(1) / det.abs().clamp(min=torch.finfo(dtype).tiny)[:, None]
    x, y, z, w = corners.unbind(-1)
    outside = (
        (x > w).all(1) | (x < -w).all(1) | (y > w).all(1) | (y < -w).all(1) | (z > w).all(1) | (z < -w).all(1) | (w <= 0).all(1)
    )
    scale = corners[..., [0, 1, 3]].abs().amax(dim=(1, 2))
    keep = ~outside & (det.abs() > _DEGENERATE * scale**3)

    # Pixel-centre coordinates (col, row) of the corners; a corner behind the camera opens the box.
    in_front = (w > 0).all(1)
    safe_w = torch.where(w > 0, w, torch.ones_like(w))
    cols = (x / safe_w + 1.0) * (0.5 * width) - 0.5
    rows = (1.0 - y / safe_w) * (0.5 * height) - 0.5
    col0 = torch.where(in_front, torch.ceil(cols.amin(1)), torch.zeros_like(w[:, 0])).clamp(0, width)
    col1 = torch.where(in_front, torch.floor(cols.amax(1)), torch.full_like(w[:, 0], width - 1)).clamp(-1, width - 1)
    row0 = torch.where(in_front, torch.ceil(rows.amin(1)), torch.zeros_like(w[:, 0])).clamp(0, height)
    row1 = torch.where(in_front, torch.floor(rows.amax(1)), torch.full_like(w[:, 0], height - 1)).clamp(-1, height - 1)
    box_w = (col1 - col0 + 1).clamp(min=0).long()
    box_h = (row1 - row0 + 1).clamp(min=0).long()
    keep &= (box_w > 0) & (box_h > 0)
    face_ids = keep.nonzero(as_tuple=True)[0]
    if face_ids.numel() == 0:
        return best_face
    col0, row0, box_w, box_h = col0[face_ids].long(), row0[face_ids].long(), box_w[face_ids], box_h[face_ids]

    counts = box_w * box_h
    cumulative = counts.cumsum(0)
    max_pairs = max(max_pairs, n_pixels)  # one triangle never needs more pairs than the image has
    start = 0
    while start < face_ids.numel():
        before = int(cumulative[start - 1]) if start > 0 else 0
        stop = max(start + 1, int(torch.searchsorted(cumulative, before + max_pairs, right=True)))
        chunk_counts = counts[start:stop]
        chunk_starts = chunk_counts.cumsum(0) - chunk_counts
        # One row per (triangle, candidate pixel) pair of this chunk's bounding boxes.
        pair = torch.repeat_interleave(torch.arange(start, stop, device=device), chunk_counts)
        offsets = torch.arange(pair.numel(), device=device) - torch.repeat_interleave(chunk_starts, chunk_counts)
        pixel_index = (row0[pair] + offsets // box_w[pair]) * width + col0[pair] + offsets % box_w[pair]
        faces_here = face_ids[pair]
        start = stop

        point = _pixel_ndc(pixel_index, height, width).to(dtype)
        edges = torch.einsum("pij,pj->pi", normals[faces_here], point)
        depth = (z_plane[faces_here] * point).sum(-1)
        slack = _EDGE_SLACK * edges.abs().sum(-1, keepdim=True)
        inside = (edges >= -slack).all(-1) & (depth >= -1.0) & (depth <= 1.0)
        if not inside.any():
            continue
        depth, faces_here, pixel_index = depth[inside], faces_here[inside], pixel_index[inside]

        chunk_depth = torch.full((n_pixels,), float("inf"), dtype=dtype, device=device)
        chunk_depth.scatter_reduce_(0, pixel_index, depth, reduce="amin")
        nearest = depth == chunk_depth[pixel_index]
        # Ties (shared edges at equal depth) go to the highest triangle index, deterministically.
        chunk_face = torch.full((n_pixels,), -1, dtype=torch.long, device=device)
        chunk_face.scatter_reduce_(0, pixel_index[nearest], faces_here[nearest], reduce="amax")
        winner = nearest & (faces_here == chunk_face[pixel_index])
        win_pixel, win_depth, win_face = pixel_index[winner], depth[winner], faces_here[winner]
        closer = win_depth < best_depth[win_pixel]
        best_depth[win_pixel[closer]] = win_depth[closer]
        best_face[win_pixel[closer]] = win_face[closer]
    return best_face


def _rasterize_torch(pos_clip: Tensor, tri: Tensor, height: int, width: int, max_pairs: int) -> Tensor:
    """[B, H, W, 4] rast of nvdiffrast's layout (row 0 at the top), differentiable in `pos_clip`."""
    batch = pos_clip.shape[0]
    with torch.no_grad():
        faces = torch.stack([_visible_faces(pos, tri, height, width, max_pairs) for pos in pos_clip.detach()])
    image, pixel = (faces >= 0).nonzero(as_tuple=True)
    face = faces[image, pixel]
    corners = pos_clip[image[:, None], tri[face]]  # [N, 3, 4], with autograd
    normals, _ = _edge_functions(corners)
    edges = torch.einsum("nij,nj->ni", normals, _pixel_ndc(pixel, height, width).to(pos_clip.dtype))
    bary = edges / edges.sum(-1, keepdim=True)
    depth = (bary * corners[..., 2]).sum(-1) / (bary * corners[..., 3]).sum(-1)
    values = torch.stack([bary[:, 0], bary[:, 1], depth, (face + 1).to(pos_clip.dtype)], dim=-1)
    rast = pos_clip.new_zeros(batch * height * width, 4)
    rast = rast.index_put((image * (height * width) + pixel,), values)
    return rast.view(batch, height, width, 4)


def _interpolate_torch(attr: Tensor, rast: Tensor, tri: Tensor) -> Tensor:
    """[B, H, W, C] perspective-correct per-vertex attributes, 0 on the background."""
    face = rast[..., 3].long() - 1
    corner_index = tri[face.clamp(min=0)]  # [B, H, W, 3]
    if attr.shape[0] == 1:
        corner_values = attr[0][corner_index]
    else:
        batch = torch.arange(attr.shape[0], device=attr.device).view(-1, 1, 1, 1)
        corner_values = attr[batch, corner_index]  # [B, H, W, 3, C]
    u, v = rast[..., 0], rast[..., 1]
    weights = torch.stack([u, v, 1.0 - u - v], dim=-1)
    values = (weights[..., None] * corner_values).sum(-2)
    return values * (face >= 0)[..., None].to(values.dtype)


def _texture_torch(tex: Tensor, uv: Tensor, filter_mode: str, boundary_mode: str) -> Tensor:
    """[B, H, W, C] nearest or bilinear texture lookups with wrapped or clamped texel indices."""
    batch = uv.shape[0]
    tex = tex.expand(batch, -1, -1, -1)
    tex_h, tex_w, channels = tex.shape[1:]
    flat = tex.reshape(batch, tex_h * tex_w, channels)

    def fetch(row: Tensor, col: Tensor) -> Tensor:
        if boundary_mode == "wrap":
            row, col = row.remainder(tex_h), col.remainder(tex_w)
        else:
            row, col = row.clamp(0, tex_h - 1), col.clamp(0, tex_w - 1)
        index = (row * tex_w + col).reshape(batch, -1, 1).expand(-1, -1, channels)
        return flat.gather(1, index).view(*uv.shape[:-1], channels)

    x, y = uv[..., 0] * tex_w, uv[..., 1] * tex_h
    if filter_mode == "nearest":
        return fetch(torch.floor(y).long(), torch.floor(x).long())
    x, y = x - 0.5, y - 0.5  # texel centres sit at half-integers
    col, row = torch.floor(x), torch.floor(y)
    fx, fy = (x - col)[..., None], (y - row)[..., None]
    col, row = col.long(), row.long()
    top = fetch(row, col) * (1 - fx) + fetch(row, col + 1) * fx
    bottom = fetch(row + 1, col) * (1 - fx) + fetch(row + 1, col + 1) * fx
    return top * (1 - fy) + bottom * fy


def _edge_neighbours(tri: Tensor) -> Tensor:
    """[F, 3] the triangle across the edge opposite each corner; -1 on open or non-manifold edges."""
    n_faces = tri.shape[0]
    ends = torch.stack([tri.roll(-1, dims=1), tri.roll(-2, dims=1)], dim=-1).reshape(-1, 2)  # slot f*3+i
    low, high = ends.min(-1).values, ends.max(-1).values
    key = low * (int(tri.max()) + 1) + high
    order = key.argsort(stable=True)
    _, group, counts = torch.unique_consecutive(key[order], return_inverse=True, return_counts=True)
    first = (counts.cumsum(0) - counts)[group]  # sorted position of each group's first slot
    position = torch.arange(order.numel(), device=tri.device)
    partner = order[(2 * first + 1 - position).clamp(0, order.numel() - 1)]  # the group's other slot
    neighbours = torch.full((n_faces * 3,), -1, dtype=torch.long, device=tri.device)
    manifold = counts[group] == 2
    neighbours[order[manifold]] = partner[manifold] // 3
    return neighbours.view(n_faces, 3)


def _antialias_torch(color: Tensor, rast: Tensor, pos_clip: Tensor, tri: Tensor) -> Tensor:
    """Analytic silhouette antialiasing (see `MeshRasterizer.antialias`)."""
    batch, height, width, channels = color.shape
    face = rast[..., 3].detach().long() - 1
    depth = torch.where(face >= 0, rast[..., 2].detach(), torch.full_like(rast[..., 2], float("inf")))
    flat_face, flat_depth = face.reshape(-1), depth.reshape(-1)

    # Neighbouring pixel pairs (first, second) whose triangles differ, with the pair's direction.
    index = torch.arange(batch * height * width, device=color.device).view(batch, height, width)
    firsts, seconds, horizontal = [], [], []
    for first, second, is_horizontal in (
        (index[:, :, :-1], index[:, :, 1:], True),
        (index[:, :-1, :], index[:, 1:, :], False),
    ):
        differ = flat_face[first] != flat_face[second]
        firsts.append(first[differ])
        seconds.append(second[differ])
        horizontal.append(torch.full_like(first[differ], is_horizontal, dtype=torch.bool))
    first, second, horizontal = torch.cat(firsts), torch.cat(seconds), torch.cat(horizontal)
    if first.numel() == 0:
        return color

    # The nearer triangle of the pair occludes the other pixel: its edge is the candidate silhouette.
    second_in_front = flat_depth[second] < flat_depth[first]
    front = torch.where(second_in_front, second, first)
    other = torch.where(second_in_front, first, second)
    front_face = flat_face[front]
    image = front // (height * width)
    corners = pos_clip[image[:, None], tri[front_face]]  # [P, 3, 4], with autograd
    normals, det = _edge_functions(corners)
    normals = normals * det.detach().sign()[:, None, None]
    front_point = _pixel_ndc(front % (height * width), height, width).to(corners.dtype)
    other_point = _pixel_ndc(other % (height * width), height, width).to(corners.dtype)
    inside = torch.einsum("pij,pj->pi", normals, front_point).clamp(min=0.0)
    beyond = torch.einsum("pij,pj->pi", normals, other_point)
    # The segment from the front pixel's centre leaves its triangle through the first edge it crosses.
    leaving = beyond < 0
    safe_beyond = torch.where(leaving, beyond, -torch.ones_like(beyond))  # no 0/0 on edges not crossed
    crossing = torch.where(leaving, inside / (inside - safe_beyond), torch.inf)
    t, edge = crossing.min(dim=-1)

    # Only silhouette edges (open, or between triangles of opposite screen winding) move coverage.
    with torch.no_grad():
        _, all_det = _edge_functions(pos_clip.detach()[:, tri])  # [B, F]
        winding = all_det.sign()
        neighbour = _edge_neighbours(tri)[front_face, edge]
        silhouette = (neighbour < 0) | (winding[image, neighbour.clamp(min=0)] != winding[image, front_face])
        # Each edge is handled by the pair direction most across it, so no edge counts twice.
        line = normals.detach()[torch.arange(edge.numel(), device=edge.device), edge]
        across_x = line[:, 0].abs() / width >= line[:, 1].abs() / height
        valid = silhouette & torch.isfinite(t) & (across_x == horizontal)
    t, front, other = t[valid], front[valid], other[valid]

    # 1D box coverage: the pixel holding the edge takes |t - 0.5| of its neighbour's colour.
    flat = color.reshape(-1, channels)
    delta = (t - 0.5)[:, None] * (flat[front] - flat[other])
    target = torch.where(t >= 0.5, other, front)
    return flat.index_add(0, target, delta).view(batch, height, width, channels)


class MeshRasterizer:
    """nvdiffrast's rasterize / interpolate / texture / antialias on CUDA or in pure torch.

    Args:
        backend: "torch", "cuda" (nvdiffrast; needs CUDA and the `diffrp-nvdiffrast` package) or
            "auto" (nvdiffrast for CUDA inputs when installed, torch otherwise).
        max_pairs: most (triangle, pixel) candidate pairs the torch z-buffer tests at once.
    """

    def __init__(self, backend: str = "auto", max_pairs: int = 1 << 20) -> None:
        if backend not in _BACKENDS:
            raise ValueError(f"MeshRasterizer backend must be one of {_BACKENDS}, got {backend!r}")
        if backend == "cuda" and (not torch.cuda.is_available() or _import_nvdiffrast() is None):
            raise ValueError("MeshRasterizer backend='cuda' needs CUDA and nvdiffrast (pip install diffrp-nvdiffrast)")
        self.backend = backend
        self.max_pairs = max_pairs
        self._contexts: dict[torch.device, object] = {}

    def _use_cuda(self, tensor: Tensor) -> bool:
        if self.backend == "cuda" and not tensor.is_cuda:
            raise ValueError(f"MeshRasterizer backend='cuda' needs CUDA tensors, got {tensor.device}")
        return self.backend == "cuda" or (self.backend == "auto" and tensor.is_cuda and _import_nvdiffrast() is not None)

    def _context(self, device: torch.device) -> object:
        if device not in self._contexts:
            self._contexts[device] = _import_nvdiffrast().RasterizeCudaContext(device=device)
        return self._contexts[device]

    @staticmethod
    def _nvdiffrast_positions(pos_clip: Tensor) -> Tensor:
        """The one row flip: negating clip y puts nvdiffrast's row 0 at the image's top."""
        return (pos_clip * pos_clip.new_tensor([1.0, -1.0, 1.0, 1.0])).contiguous()

    @staticmethod
    def _check_mesh(pos_clip: Tensor, tri: Tensor) -> None:
        if pos_clip.ndim != 3 or pos_clip.shape[-1] != 4:
            raise ValueError(f"pos_clip must be [B, V, 4], got shape {tuple(pos_clip.shape)}")
        if tri.ndim != 2 or tri.shape[1] != 3:
            raise ValueError(f"tri must be [F, 3], got shape {tuple(tri.shape)}")
        if tri.numel() and (int(tri.min()) < 0 or int(tri.max()) >= pos_clip.shape[1]):
            raise ValueError(f"tri indexes vertices {int(tri.min())}..{int(tri.max())} but there are {pos_clip.shape[1]}")

    def rasterize(self, pos_clip: Tensor, tri: Tensor, resolution: tuple[int, int]) -> Tensor:
        """Find the nearest triangle and its barycentrics at every pixel centre.

        Args:
            pos_clip: [B, V, 4] clip-space vertex positions (see `clip_positions`).
            tri: [F, 3] integer vertex indices (no back-face culling).
            resolution: (H, W).

        Returns:
            rast: [B, H, W, 4] = (u, v, z/w, triangle_id + 1), zero on the background, row 0 at
                the top; differentiable in `pos_clip` through u, v (and z/w on the torch path).
        """
        self._check_mesh(pos_clip, tri)
        height, width = resolution
        if self._use_cuda(pos_clip):
            dr = _import_nvdiffrast()
            rast, _ = dr.rasterize(
                self._context(pos_clip.device), self._nvdiffrast_positions(pos_clip.float()), tri.int().contiguous(), (height, width)
            )
            return rast
        return _rasterize_torch(pos_clip, tri.long(), height, width, self.max_pairs)

    def interpolate(self, attr: Tensor, rast: Tensor, tri: Tensor) -> Tensor:
        """Interpolate per-vertex attributes over the rasterized triangles.

        Args:
            attr: [V, C], [1, V, C] or [B, V, C] per-vertex values.
            rast: [B, H, W, 4] from `rasterize`.
            tri: [F, 3] the triangles given to `rasterize`.

        Returns:
            [B, H, W, C] perspective-correct values, 0 on the background; differentiable in
            `attr` and, through `rast`, in the vertex positions.
        """
        if attr.ndim == 2:
            attr = attr[None]
        if self._use_cuda(rast):
            out, _ = _import_nvdiffrast().interpolate(attr.float().contiguous(), rast, tri.int().contiguous())
            return out
        return _interpolate_torch(attr, rast, tri.long())

    def texture(self, tex: Tensor, uv: Tensor, filter_mode: str = "linear", boundary_mode: str = "wrap") -> Tensor:
        """Sample a texture without mipmaps.

        Args:
            tex: [B or 1, Ht, Wt, C] texture; v = 0 is row 0 (flip an OBJ-style image, whose v
                grows upwards from its bottom row, or pass 1 - v).
            uv: [B, H, W, 2] texture coordinates, texel centres at (i + 0.5) / size.
            filter_mode: "linear" (bilinear) or "nearest".
            boundary_mode: "wrap" (repeat) or "clamp" (edge texels extend outwards).

        Returns:
            [B, H, W, C] samples, differentiable in `tex` and (bilinear) in `uv`.
        """
        if filter_mode not in ("linear", "nearest"):
            raise ValueError(f"texture filter_mode must be 'linear' or 'nearest', got {filter_mode!r}")
        if boundary_mode not in ("wrap", "clamp"):
            raise ValueError(f"texture boundary_mode must be 'wrap' or 'clamp', got {boundary_mode!r}")
        if self._use_cuda(uv):
            return _import_nvdiffrast().texture(
                tex.float().contiguous(), uv.float().contiguous(), filter_mode=filter_mode, boundary_mode=boundary_mode
            )
        return _texture_torch(tex, uv, filter_mode, boundary_mode)

    def antialias(self, color: Tensor, rast: Tensor, pos_clip: Tensor, tri: Tensor) -> Tensor:
        """Blend colours across silhouette edges so coverage has gradients w.r.t. positions.

        For each horizontally or vertically neighbouring pixel pair showing different triangles,
        the nearer one's triangle is followed from its pixel centre towards the other's; if the
        segment leaves it through a silhouette edge (an open edge, or one whose neighbour has the
        opposite screen winding) that runs more across this direction than along it, the edge
        crosses at fraction t of the segment, and the pixel holding the crossing takes
        |t - 0.5| of the other pixel's colour (the share of a one-pixel-wide box the other surface
        covers). t is a differentiable function of the edge's clip positions.

        Args:
            color: [B, H, W, C] shaded image, row 0 at the top.
            rast: [B, H, W, 4] from `rasterize(pos_clip, tri, ...)`.
            pos_clip: [B, V, 4] the positions given to `rasterize`.
            tri: [F, 3] the triangles given to `rasterize`.

        Returns:
            [B, H, W, C] antialiased colour.
        """
        self._check_mesh(pos_clip, tri)
        if self._use_cuda(color):
            return _import_nvdiffrast().antialias(
                color.float().contiguous(), rast, self._nvdiffrast_positions(pos_clip.float()), tri.int().contiguous()
            )
        return _antialias_torch(color, rast, pos_clip, tri.long())

    def render(
        self,
        vertices: Tensor,
        faces: Tensor,
        cameras: CameraBatch,
        attributes: Tensor | None = None,
        antialias: bool = True,
        near: float = 0.1,
        far: float = 100.0,
    ) -> dict[str, Tensor]:
        """Rasterize a world-space mesh from every camera of a batch.

        Args:
            vertices: [V, 3] world positions.
            faces: [F, 3] vertex indices.
            cameras: B cameras at one resolution H x W.
            attributes: [V, C] or [B, V, C] per-vertex values to interpolate, or None.
            antialias: blend `attributes` and `opacity` across silhouettes (giving them
                gradients w.r.t. `vertices`).
            near, far: clipping planes.

        Returns:
            "rast": [B, H, W, 4] as `rasterize` returns it.
            "opacity": [B, H, W, 1] coverage (fractional along silhouettes when antialiased).
            "depth": [B, H, W, 1] camera-space depth along the view axis, 0 on the background.
            "attributes": [B, H, W, C], 0 on the background (only when `attributes` is given).
        """
        pos_clip = clip_positions(vertices, cameras, near, far)
        rast = self.rasterize(pos_clip, faces, (cameras.height, cameras.width))
        out = {"rast": rast, "depth": self.interpolate(pos_clip[..., 3:], rast, faces)}
        coverage = (rast[..., 3:] > 0).to(pos_clip.dtype)
        layers = [coverage] if attributes is None else [self.interpolate(attributes, rast, faces), coverage]
        stacked = torch.cat(layers, dim=-1)
        if antialias:
            stacked = self.antialias(stacked, rast, pos_clip, faces)
        out["opacity"] = stacked[..., -1:]
        if attributes is not None:
            out["attributes"] = stacked[..., :-1]
        return out
