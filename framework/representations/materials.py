"""Materials turn albedo and normals into colour; DreamFusion's shading augmentation lives here.

In training, a material draws a `Shading` per step (mode and point light per image) from its own
seeded generator; in evaluation it uses a fixed light beside the camera.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framework.cameras.camera import CameraBatch

SHADING_MODES = ("albedo", "lambertian", "textureless")


@dataclass
class Shading:
    mode: str
    light_positions: Tensor  # [B, 3] world positions of the point light per image


class DiffuseMaterial(nn.Module):
    """Unlit albedo: what the renders show is what the field stores."""

    requires_normals = False

    def sample_shading(self, cameras: CameraBatch, training: bool) -> Shading:
        return Shading("albedo", cameras.position)

    def shade(self, albedo: Tensor, normals: Tensor | None, points: Tensor, light_positions: Tensor, shading: Shading) -> Tensor:
        return albedo


class ShadingAugmentation(nn.Module):
    """DreamFusion's random shading: plain albedo, Lambertian under a random point light, or
    textureless (white albedo, Lambertian) so geometry alone must look right.

    Args:
        probabilities: of (albedo, lambertian, textureless) in training.
        ambient: the ambient light fraction (the rest is diffuse).
        light_distance_range: distance of the light from the origin.
        light_spread_deg: the light is drawn within this angle of the camera direction.
        seed: of the generator that draws modes and lights (checkpointed by the system).
    """

    requires_normals = True

    def __init__(
        self,
        probabilities: tuple[float, float, float] = (0.2, 0.6, 0.2),
        ambient: float = 0.35,
        light_distance_range: tuple[float, float] = (2.0, 4.0),
        light_spread_deg: float = 45.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        probabilities = tuple(float(p) for p in probabilities)
        if len(probabilities) != 3 or min(probabilities) < 0 or sum(probabilities) <= 0:
            raise ValueError(f"probabilities={probabilities!r}: need three non-negative weights for {SHADING_MODES}")
        self.probabilities = torch.tensor(probabilities) / sum(probabilities)
        self.ambient = ambient
        self.light_distance_range = light_distance_range
        self.light_spread_deg = light_spread_deg
        self.generator = torch.Generator().manual_seed(seed)

    def sample_shading(self, cameras: CameraBatch, training: bool) -> Shading:
        if not training:
            return Shading("lambertian", _eval_light(cameras))
        mode = SHADING_MODES[int(torch.multinomial(self.probabilities, 1, generator=self.generator))]
        batch = cameras.batch_size
        towards_camera = F.normalize(cameras.position.cpu(), dim=-1)
        spread = torch.tan(torch.deg2rad(torch.tensor(self.light_spread_deg)))
        jitter = spread * torch.randn(batch, 3, generator=self.generator) / 3**0.5
        direction = F.normalize(towards_camera + jitter, dim=-1)
        low, high = self.light_distance_range
        distance = low + (high - low) * torch.rand(batch, 1, generator=self.generator)
        return Shading(mode, (direction * distance).to(cameras.device))

    def shade(self, albedo: Tensor, normals: Tensor | None, points: Tensor, light_positions: Tensor, shading: Shading) -> Tensor:
        if shading.mode == "albedo":
            return albedo
        assert normals is not None, "ShadingAugmentation needs normals for Lambertian shading"
        light = F.normalize(light_positions - points, dim=-1)
        diffuse = (normals * light).sum(-1, keepdim=True).clamp(min=0.0)
        brightness = self.ambient + (1 - self.ambient) * diffuse
        base = torch.ones_like(albedo) if shading.mode == "textureless" else albedo
        return base * brightness


def _eval_light(cameras: CameraBatch) -> Tensor:
    """A light raised above and to the left of each camera: the bundled prior's training light."""
    c2w = cameras.c2w
    offset = 0.6 * c2w[:, :3, 1] - 0.3 * c2w[:, :3, 0]
    return cameras.position + offset * cameras.distance[:, None]
