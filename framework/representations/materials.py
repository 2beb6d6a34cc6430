"""Materials turn albedo and normals into colour; DreamFusion's shading augmentation lives here.

In training, a material draws a `Shading` per step (mode and light per image) from its own seeded
generator; in evaluation it uses a fixed light beside the camera. Every renderer calls
`shade(albedo, normals, points, directions, shading, image_index)` on its samples (volume
samples, mesh pixels): the view direction is there for specular materials, `image_index` picks
each sample's per-image light.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framework.cameras.camera import CameraBatch
from framework.representations.lights import CameraLight

SHADING_MODES = ("albedo", "lambertian", "textureless")


@dataclass
class Shading:
    mode: str
    light_positions: Tensor  # [B, 3] world positions of the point light per image
    light_directions: Tensor | None = None  # [B, 3] unit directions of a directional light per image


class DiffuseMaterial(nn.Module):
    """Unlit albedo: what the renders show is what the field stores."""

    requires_normals = False

    def sample_shading(self, cameras: CameraBatch, training: bool) -> Shading:
        return Shading("albedo", cameras.position)

    def shade(self, albedo: Tensor, normals: Tensor | None, points: Tensor, directions: Tensor, shading: Shading, image_index: Tensor) -> Tensor:
        return albedo


class LitMaterial(nn.Module):
    """Albedo under a configured light (`framework.representations.lights`), shaded with the
    renderer's normals; no light (`light=None`, a prior trained on photographs) shows the albedo
    as it is. Deterministic: nothing is drawn.

    Args:
        light: e.g. `CameraLight()`, the bundled world's light; or None.
    """

    def __init__(self, light: CameraLight | None = None) -> None:
        super().__init__()
        self.light = light

    @property
    def requires_normals(self) -> bool:
        return self.light is not None

    def sample_shading(self, cameras: CameraBatch, training: bool) -> Shading:
        if self.light is None:
            return Shading("albedo", cameras.position)
        return Shading("lit", cameras.position, self.light.directions(cameras))

    def shade(self, albedo: Tensor, normals: Tensor | None, points: Tensor, directions: Tensor, shading: Shading, image_index: Tensor) -> Tensor:
        if self.light is None:
            return albedo
        assert normals is not None and shading.light_directions is not None, "LitMaterial needs normals and the light's directions"
        return (albedo * self.light.brightness(normals, shading.light_directions[image_index])).clamp(0.0, 1.0)


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

    def shade(self, albedo: Tensor, normals: Tensor | None, points: Tensor, directions: Tensor, shading: Shading, image_index: Tensor) -> Tensor:
        if shading.mode == "albedo":
            return albedo
        assert normals is not None, "ShadingAugmentation needs normals for Lambertian shading"
        light = F.normalize(shading.light_positions[image_index] - points, dim=-1)
        diffuse = (normals * light).sum(-1, keepdim=True).clamp(min=0.0)
        brightness = self.ambient + (1 - self.ambient) * diffuse
        base = torch.ones_like(albedo) if shading.mode == "textureless" else albedo
        return base * brightness


def _eval_light(cameras: CameraBatch) -> Tensor:
    """A light raised above and to the left of each camera: the bundled prior's training light."""
    c2w = cameras.c2w
    offset = 0.6 * c2w[:, :3, 1] - 0.3 * c2w[:, :3, 0]
    return cameras.position + offset * cameras.distance[:, None]
