"""Ground-truth renders and meshes of procedural objects.

Renders are sphere traced through the framework's cameras (one camera convention for the prior's
training data, the SDS camera sampler and the evaluation), shaded Lambertian under a light that
follows the camera, on a white background, with 2x2 supersampled edges. Normal maps and depth
maps use the framework's conventions (`framework.renderers.normal_map`, `.depth_map`); albedo
renders are the unlit colours on white (RichDreamer's albedo domain).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bundled.world.objects import ProceduralObject
from framework.cameras.camera import CameraBatch
from framework.renderers.depth_map import depth_map
from framework.renderers.normal_map import normal_map
from framework.representations.lights import CameraLight

WORLD_LIGHT = CameraLight()
"""The world's light: follows the camera, raised and to its left, with an ambient share."""
_MARCH_STEPS = 96
_HIT_EPSILON = 1e-3


def _sphere_trace(obj: ProceduralObject, origins: Tensor, directions: Tensor) -> tuple[Tensor, Tensor]:
    """Distances along rays [N] to the surface and a hit mask [N]; rays start at the unit sphere."""
    b = (origins * directions).sum(-1)
    c = (origins * origins).sum(-1) - 1.0
    disc = b * b - c
    t = (-b - disc.clamp(min=0).sqrt()).clamp(min=0.0)
    t_far = -b + disc.clamp(min=0).sqrt()
    active = disc > 0
    hit = torch.zeros_like(active)
    for _ in range(_MARCH_STEPS):
        index = active.nonzero(as_tuple=True)[0]
        if index.numel() == 0:
            break
        distance, _ = obj.evaluate(origins[index] + t[index, None] * directions[index])
        t[index] = t[index] + distance
        converged = distance < _HIT_EPSILON
        escaped = t[index] > t_far[index]
        hit[index] = converged & ~escaped
        active[index] = ~(converged | escaped)
    return t, hit


def _normals(obj: ProceduralObject, points: Tensor, eps: float = 1e-3) -> Tensor:
    offsets = torch.eye(3, dtype=points.dtype, device=points.device) * eps
    grads = [obj.evaluate(points + o)[0] - obj.evaluate(points - o)[0] for o in offsets]
    return F.normalize(torch.stack(grads, dim=-1), dim=-1)


@torch.no_grad()
def render_object(obj: ProceduralObject, colour: str, cameras: CameraBatch, supersample: int = 2, lit: bool = True) -> tuple[Tensor, Tensor]:
    """Shaded RGB [B, H, W, 3] in [0, 1] on white, and coverage masks [B, H, W] in [0, 1]; with
    `lit=False` the unlit colours (the albedo: RichDreamer's albedo domain)."""
    fine, shape, index, points = _trace(obj, cameras, supersample)
    rgb = points.new_ones(shape[0] * shape[1] * shape[2], 3)
    if index.numel() > 0:
        _, part = obj.evaluate(points)
        albedo = obj.part_colours(colour).to(points)[part]
        if lit:
            light = WORLD_LIGHT.directions(fine).repeat_interleave(shape[1] * shape[2], dim=0)[index]
            albedo = (albedo * WORLD_LIGHT.brightness(_normals(obj, points), light)).clamp(0.0, 1.0)
        rgb[index] = albedo
    return _downsample(rgb.view(*shape, 3), supersample), _coverage(shape, index, supersample)


@torch.no_grad()
def render_normal_map(obj: ProceduralObject, cameras: CameraBatch, supersample: int = 2) -> tuple[Tensor, Tensor]:
    """Camera-space normal maps [B, H, W, 3] in [0, 1] on white, and coverage masks [B, H, W]."""
    _, shape, index, points = _trace(obj, cameras, supersample)
    normals = points.new_zeros(shape[0] * shape[1] * shape[2], 3)
    hit = points.new_zeros(normals.shape[0], 1)
    if index.numel() > 0:
        normals[index] = _normals(obj, points)
        hit[index] = 1.0
    fine = cameras.with_resolution(shape[1], shape[2])
    colours = normal_map(normals.view(*shape, 3), hit.view(*shape, 1), fine)
    return _downsample(colours, supersample), _coverage(shape, index, supersample)


@torch.no_grad()
def render_normal_depth(obj: ProceduralObject, cameras: CameraBatch, supersample: int = 2) -> tuple[Tensor, Tensor]:
    """Normal maps and depth maps together [B, H, W, 4] in [0, 1] (normal map on white, depth
    map on black), and coverage masks [B, H, W]: RichDreamer's normal-depth domain."""
    fine, shape, index, points = _trace(obj, cameras, supersample)
    pixels = shape[0] * shape[1] * shape[2]
    normals, depth, hit = points.new_zeros(pixels, 3), points.new_zeros(pixels, 1), points.new_zeros(pixels, 1)
    if index.numel() > 0:
        normals[index] = _normals(obj, points)
        camera = index // (shape[1] * shape[2])
        forward = -fine.c2w[camera, :3, 2]
        depth[index] = ((points - fine.position[camera]) * forward).sum(dim=-1, keepdim=True)
        hit[index] = 1.0
    coverage = hit.view(*shape, 1)
    image = torch.cat([normal_map(normals.view(*shape, 3), coverage, fine), depth_map(depth.view(*shape, 1), coverage, fine)], dim=-1)
    return _downsample(image, supersample), _coverage(shape, index, supersample)


def _trace(obj: ProceduralObject, cameras: CameraBatch, supersample: int) -> tuple[CameraBatch, tuple[int, int, int], Tensor, Tensor]:
    """The supersampled cameras, their image shape [B, H, W], the flat indices of the pixels that
    hit the object, and the surface points of those pixels."""
    fine = cameras.with_resolution(cameras.height * supersample, cameras.width * supersample)
    origins, directions = fine.rays()
    shape = tuple(origins.shape[:-1])
    origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
    t, hit = _sphere_trace(obj, origins, directions)
    index = hit.nonzero(as_tuple=True)[0]
    return fine, shape, index, origins[index] + t[index, None] * directions[index]


def _downsample(image: Tensor, supersample: int) -> Tensor:
    return F.avg_pool2d(image.permute(0, 3, 1, 2), supersample).permute(0, 2, 3, 1)


def _coverage(shape: tuple[int, int, int], index: Tensor, supersample: int) -> Tensor:
    mask = torch.zeros(shape[0] * shape[1] * shape[2], device=index.device)
    mask[index] = 1.0
    return F.avg_pool2d(mask.view(shape[0], 1, shape[1], shape[2]), supersample)[:, 0]


@torch.no_grad()
def object_mesh(obj: ProceduralObject, colour: str, resolution: int = 128):
    """The object as a vertex-coloured `trimesh.Trimesh` (marching cubes on its SDF)."""
    import trimesh
    from skimage.measure import marching_cubes

    axis = torch.linspace(-1.0, 1.0, resolution)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)
    distance, _ = obj.evaluate(grid.reshape(-1, 3))
    volume = distance.view(resolution, resolution, resolution).numpy()
    spacing = 2.0 / (resolution - 1)
    vertices, faces, _, _ = marching_cubes(volume, level=0.0, spacing=(spacing,) * 3)
    vertices = vertices - 1.0
    _, part = obj.evaluate(torch.from_numpy(vertices).float())
    colours = obj.part_colours(colour)[part].numpy()
    vertex_colours = np.concatenate([colours, np.ones((len(colours), 1))], axis=1)
    return trimesh.Trimesh(vertices, faces, vertex_colors=(vertex_colours * 255).astype(np.uint8), process=False)
