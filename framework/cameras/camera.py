"""The one module that owns camera maths.

World convention: right-handed, +z up, the object inside the unit sphere at the origin. A camera
at azimuth 0 sits on the +x axis and looks at the object's front; azimuth grows counter-clockwise
seen from above (towards +y); elevation is the angle above the xy plane.

Camera-to-world matrices use the OpenGL convention (camera looks down -z, +y up, +x right), as
nvdiffrast and most SDS code do. `world_to_camera_opencv` gives the OpenCV form (+z forward,
+y down) that gsplat expects. Every renderer, the camera sampler and the bundled prior's object
world build their cameras here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

_OPENGL_TO_OPENCV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


def orbit_position(elevation_deg: Tensor, azimuth_deg: Tensor, distance: Tensor) -> Tensor:
    """Camera centres on an orbit around the origin.

    Args:
        elevation_deg: [B] degrees above the xy plane.
        azimuth_deg: [B] degrees, 0 = +x (the object's front), 90 = +y.
        distance: [B] distance to the origin.

    Returns:
        [B, 3] positions.
    """
    elevation = torch.deg2rad(elevation_deg)
    azimuth = torch.deg2rad(azimuth_deg)
    return torch.stack(
        [
            distance * torch.cos(elevation) * torch.cos(azimuth),
            distance * torch.cos(elevation) * torch.sin(azimuth),
            distance * torch.sin(elevation),
        ],
        dim=-1,
    )


def look_at(position: Tensor, target: Tensor | None = None) -> Tensor:
    """OpenGL camera-to-world matrices [B, 4, 4] looking from `position` [B, 3] at `target`.

    World +z is "up"; at the poles (looking straight down or up) the camera's up falls back to
    world +x so the matrix stays well defined.
    """
    if target is None:
        target = torch.zeros_like(position)
    forward = torch.nn.functional.normalize(target - position, dim=-1)
    world_up = torch.tensor([0.0, 0.0, 1.0], dtype=position.dtype, device=position.device)
    world_up = world_up.expand_as(forward)
    right = torch.linalg.cross(forward, world_up, dim=-1)
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    fallback_up = torch.tensor([1.0, 0.0, 0.0], dtype=position.dtype, device=position.device)
    right = torch.where(degenerate, torch.linalg.cross(forward, fallback_up.expand_as(forward), dim=-1), right)
    right = torch.nn.functional.normalize(right, dim=-1)
    up = torch.linalg.cross(right, forward, dim=-1)
    c2w = torch.zeros(position.shape[0], 4, 4, dtype=position.dtype, device=position.device)
    c2w[:, :3, 0] = right
    c2w[:, :3, 1] = up
    c2w[:, :3, 2] = -forward
    c2w[:, :3, 3] = position
    c2w[:, 3, 3] = 1.0
    return c2w


def ray_directions(c2w: Tensor, focal: Tensor, height: int, width: int) -> Tensor:
    """World-space unit directions [B, H, W, 3] through the pixel centres of cameras `c2w` [B, 4, 4]
    with focal lengths `focal` [B] in pixels; row 0 is the top of the image, column 0 its left.
    A zero rotation gives zero directions."""
    focal = focal.view(-1, 1, 1)
    rows = torch.arange(height, dtype=c2w.dtype, device=c2w.device) + 0.5
    cols = torch.arange(width, dtype=c2w.dtype, device=c2w.device) + 0.5
    v, u = torch.meshgrid(rows, cols, indexing="ij")
    x = (u - 0.5 * width) / focal
    y = -(v - 0.5 * height) / focal
    directions_cam = torch.stack([x, y, -torch.ones_like(x)], dim=-1)  # [B, H, W, 3]
    rotation = c2w[:, None, None, :3, :3]
    return torch.nn.functional.normalize((rotation @ directions_cam[..., None])[..., 0], dim=-1)


@dataclass(frozen=True)
class CameraBatch:
    """A batch of pinhole cameras that all render at one resolution.

    Attributes:
        c2w: [B, 4, 4] OpenGL camera-to-world matrices.
        fovy_deg: [B] vertical field of view in degrees.
        elevation_deg, azimuth_deg, distance: [B] the orbit parameters (what view-dependent
            prompts and camera-conditioned priors read).
        height, width: image size in pixels.
    """

    c2w: Tensor
    fovy_deg: Tensor
    elevation_deg: Tensor
    azimuth_deg: Tensor
    distance: Tensor
    height: int
    width: int

    @classmethod
    def from_orbit(
        cls,
        elevation_deg: Tensor,
        azimuth_deg: Tensor,
        distance: Tensor,
        fovy_deg: Tensor,
        height: int,
        width: int | None = None,
    ) -> "CameraBatch":
        position = orbit_position(elevation_deg, azimuth_deg, distance)
        return cls(
            c2w=look_at(position),
            fovy_deg=fovy_deg,
            elevation_deg=elevation_deg,
            azimuth_deg=azimuth_deg,
            distance=distance,
            height=height,
            width=width if width is not None else height,
        )

    @property
    def batch_size(self) -> int:
        return self.c2w.shape[0]

    @property
    def device(self) -> torch.device:
        return self.c2w.device

    @property
    def position(self) -> Tensor:
        """[B, 3] camera centres."""
        return self.c2w[:, :3, 3]

    def to(self, device: torch.device | str) -> "CameraBatch":
        return replace(
            self,
            c2w=self.c2w.to(device),
            fovy_deg=self.fovy_deg.to(device),
            elevation_deg=self.elevation_deg.to(device),
            azimuth_deg=self.azimuth_deg.to(device),
            distance=self.distance.to(device),
        )

    def subset(self, rows: Tensor | slice) -> "CameraBatch":
        """The cameras at `rows` (an index tensor or a slice), same resolution."""
        return replace(
            self,
            c2w=self.c2w[rows],
            fovy_deg=self.fovy_deg[rows],
            elevation_deg=self.elevation_deg[rows],
            azimuth_deg=self.azimuth_deg[rows],
            distance=self.distance[rows],
        )

    @classmethod
    def cat(cls, batches: "list[CameraBatch]") -> "CameraBatch":
        """One batch of all cameras of `batches` (which must share a resolution)."""
        sizes = {(b.height, b.width) for b in batches}
        if len(sizes) != 1:
            raise ValueError(f"cannot concatenate camera batches of different resolutions {sorted(sizes)}")
        return replace(
            batches[0],
            c2w=torch.cat([b.c2w for b in batches]),
            fovy_deg=torch.cat([b.fovy_deg for b in batches]),
            elevation_deg=torch.cat([b.elevation_deg for b in batches]),
            azimuth_deg=torch.cat([b.azimuth_deg for b in batches]),
            distance=torch.cat([b.distance for b in batches]),
        )

    def with_resolution(self, height: int, width: int | None = None) -> "CameraBatch":
        return replace(self, height=height, width=width if width is not None else height)

    def focal_pixels(self) -> Tensor:
        """[B] focal length in pixels (square pixels)."""
        return 0.5 * self.height / torch.tan(0.5 * torch.deg2rad(self.fovy_deg))

    def intrinsics(self) -> Tensor:
        """[B, 3, 3] OpenCV intrinsics with the principal point at the image centre."""
        focal = self.focal_pixels()
        K = torch.zeros(self.batch_size, 3, 3, dtype=self.c2w.dtype, device=self.device)
        K[:, 0, 0] = focal
        K[:, 1, 1] = focal
        K[:, 0, 2] = 0.5 * self.width
        K[:, 1, 2] = 0.5 * self.height
        K[:, 2, 2] = 1.0
        return K

    def world_to_camera_opencv(self) -> Tensor:
        """[B, 4, 4] world-to-camera matrices in OpenCV convention (+z forward, +y down)."""
        flip = _OPENGL_TO_OPENCV.to(self.c2w)
        return torch.linalg.inv(self.c2w @ flip)

    def projection_opengl(self, near: float = 0.1, far: float = 100.0) -> Tensor:
        """[B, 4, 4] OpenGL clip-from-camera matrices (the form nvdiffrast rasterises)."""
        tan_half = torch.tan(0.5 * torch.deg2rad(self.fovy_deg))
        aspect = self.width / self.height
        proj = torch.zeros(self.batch_size, 4, 4, dtype=self.c2w.dtype, device=self.device)
        proj[:, 0, 0] = 1.0 / (tan_half * aspect)
        proj[:, 1, 1] = 1.0 / tan_half
        proj[:, 2, 2] = -(far + near) / (far - near)
        proj[:, 2, 3] = -2.0 * far * near / (far - near)
        proj[:, 3, 2] = -1.0
        return proj

    def rays(self) -> tuple[Tensor, Tensor]:
        """Ray origins and unit directions through pixel centres, each [B, H, W, 3].

        Row 0 is the top of the image, column 0 its left side.
        """
        directions = ray_directions(self.c2w, self.focal_pixels(), self.height, self.width)
        origins = self.position[:, None, None, :].expand_as(directions)
        return origins, directions

