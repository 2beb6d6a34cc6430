"""Signed distance functions of the primitives the procedural object world is built from.

Every function takes points `p: [..., 3]` and returns distances `[...]` (negative inside). Convex
shapes built as the maximum of plane distances are exact inside and a lower bound outside,
which keeps sphere tracing safe.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _translate(p: Tensor, centre: tuple[float, float, float]) -> Tensor:
    return p - torch.tensor(centre, dtype=p.dtype, device=p.device)


def sphere(p: Tensor, radius: float, centre: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Tensor:
    return _translate(p, centre).norm(dim=-1) - radius


def box(p: Tensor, half_size: tuple[float, float, float], centre: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Tensor:
    q = _translate(p, centre).abs() - torch.tensor(half_size, dtype=p.dtype, device=p.device)
    outside = q.clamp(min=0.0).norm(dim=-1)
    inside = q.max(dim=-1).values.clamp(max=0.0)
    return outside + inside


def cylinder_z(p: Tensor, radius: float, z_min: float, z_max: float, centre_xy: tuple[float, float] = (0.0, 0.0)) -> Tensor:
    """A capped cylinder whose axis is parallel to z."""
    local = _translate(p, (centre_xy[0], centre_xy[1], 0.5 * (z_min + z_max)))
    radial = local[..., :2].norm(dim=-1) - radius
    axial = local[..., 2].abs() - 0.5 * (z_max - z_min)
    d = torch.stack([radial, axial], dim=-1)
    return d.clamp(min=0.0).norm(dim=-1) + d.max(dim=-1).values.clamp(max=0.0)


def cone_z(p: Tensor, base_radius: float, z_base: float, z_apex: float) -> Tensor:
    """A solid cone on the z axis with a flat base at `z_base` and its apex at `z_apex`."""
    height = z_apex - z_base
    local_z = p[..., 2] - z_base
    radial = p[..., :2].norm(dim=-1)
    # 2D distance to the triangle (0,0)-(base_radius,0)-(0,height) in the (radial, z) half-plane.
    edge = torch.tensor([-base_radius, height], dtype=p.dtype, device=p.device)
    to_point = torch.stack([radial - base_radius, local_z], dim=-1)
    t = ((to_point * edge).sum(-1) / edge.dot(edge)).clamp(0.0, 1.0)
    slant = (to_point - t[..., None] * edge).norm(dim=-1)
    base = torch.stack([radial.clamp(max=base_radius) - radial, -local_z], dim=-1).norm(dim=-1)
    distance = torch.minimum(slant, base)
    inside = (local_z >= 0) & (local_z <= height) & (radial <= base_radius * (1 - local_z / height))
    return torch.where(inside, -distance, distance)


def torus(p: Tensor, major: float, minor: float, axis: str = "z", centre: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Tensor:
    """A torus whose ring lies in the plane perpendicular to `axis`."""
    local = _translate(p, centre)
    index = "xyz".index(axis)
    in_plane = [i for i in range(3) if i != index]
    ring = local[..., in_plane].norm(dim=-1) - major
    return torch.stack([ring, local[..., index]], dim=-1).norm(dim=-1) - minor


def convex_planes(p: Tensor, normals: Tensor, offsets: Tensor) -> Tensor:
    """A convex polytope {x : n_i . x <= d_i}: `normals` [K, 3] (unit), `offsets` [K]."""
    normals = normals.to(p)
    return (p @ normals.T - offsets.to(p)).max(dim=-1).values


def square_pyramid(p: Tensor, half_base: float, z_base: float, z_apex: float) -> Tensor:
    height = z_apex - z_base
    slope = torch.tensor([height, half_base])
    slope = slope / slope.norm()
    normals = [[0.0, 0.0, -1.0]]
    offsets = [-z_base]
    for sx, sy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        n = [sx * slope[0].item(), sy * slope[0].item(), slope[1].item()]
        normals.append(n)
        offsets.append(slope[1].item() * z_apex)
    return convex_planes(p, torch.tensor(normals), torch.tensor(offsets))


def roof_prism(p: Tensor, half_width_x: float, half_length_y: float, z_base: float, z_ridge: float) -> Tensor:
    """A gable roof: a triangular prism whose ridge runs along y."""
    height = z_ridge - z_base
    slope = torch.tensor([height, half_width_x])
    slope = slope / slope.norm()
    normals = torch.tensor(
        [
            [0.0, 0.0, -1.0],
            [0.0, 1.0, 0.0],
            [0.0, -1.0, 0.0],
            [slope[0].item(), 0.0, slope[1].item()],
            [-slope[0].item(), 0.0, slope[1].item()],
        ]
    )
    offsets = torch.tensor([-z_base, half_length_y, half_length_y, slope[1].item() * z_ridge, slope[1].item() * z_ridge])
    return convex_planes(p, normals, offsets)


def capped_cone_x(p: Tensor, start: tuple[float, float, float], length: float, radius: float) -> Tensor:
    """A cone pointing along +x from a disc of `radius` at `start` to a tip `length` further."""
    local = _translate(p, start)
    cyclic = local[..., [1, 2, 0]]  # a rotation taking +x to +z
    return cone_z(cyclic, radius, 0.0, length)
