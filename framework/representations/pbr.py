"""A physically based material (Fantasia3D's appearance stage): a texture field of albedo,
roughness and metallic, shaded with Cook-Torrance GGX under an environment light.

The BRDF is Lambertian diffuse plus the microfacet specular `D * G * F / (4 n.l n.v)` (GGX D,
Smith G, Schlick F with `F0 = lerp(0.04, albedo, metallic)`); its integral against the light is
taken with the split sum of `framework.representations.environment_light`, so a pixel costs a few
texture lookups and no sampling.

Output space: the linear colour clamped to [0, 1], with no gamma. The framework's priors see
renders in [0, 1] display space, and the other materials (`LitMaterial`, the bundled world's
images) already treat albedo times light as display values; a gamma here would make this
material's albedo mean something else than theirs (a stage that switches to it would change
colour), so the environment's intensity is the exposure control instead.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from framework.cameras.camera import CameraBatch
from framework.representations.encodings import TriplaneEncoding
from framework.representations.environment_light import EnvironmentLight
from framework.representations.materials import Shading
from framework.representations.nerf import _mlp

# Reflectance of dielectrics at normal incidence (about 4 % for most non-metals).
_DIELECTRIC_F0 = 0.04
# The field starts near-dielectric (sigmoid(-2) ~ 0.12): at metallic 0.5 the diffuse half of
# every surface would start dark.
_INITIAL_METALLIC_LOGIT = -2.0


class PBRMaterial(nn.Module):
    """Albedo, roughness and metallic from a texture field, lit by an environment light.

    Args:
        encoding: maps world points [N, 3] to features [N, encoding.out_dim]; None: a small
            triplane (resolution 64, 8 channels).
        light: the environment; None: `EnvironmentLight()` (the procedural sky).
        hidden, n_hidden_layers: width and depth of the MLP after the encoding.
        min_roughness: the field's roughness lies in [min_roughness, 1]; near-mirrors below
            the light's sharpest prefiltered level cannot be shown anyway.
    """

    requires_normals = True

    def __init__(
        self,
        encoding: nn.Module | None = None,
        light: EnvironmentLight | None = None,
        hidden: int = 32,
        n_hidden_layers: int = 1,
        min_roughness: float = 0.08,
    ) -> None:
        super().__init__()
        if not 0.0 < min_roughness <= 1.0:
            raise ValueError(f"PBRMaterial min_roughness={min_roughness}: must be in (0, 1]")
        self.encoding = encoding if encoding is not None else TriplaneEncoding(resolution=64, channels=8)
        self.light = light if light is not None else EnvironmentLight()
        self.min_roughness = min_roughness
        self.mlp = _mlp(self.encoding.out_dim, hidden, n_hidden_layers, 5)  # albedo 3, roughness, metallic
        with torch.no_grad():
            self.mlp[-1].bias[4] = _INITIAL_METALLIC_LOGIT

    def textures(self, points: Tensor) -> dict[str, Tensor]:
        """The material at world `points` [N, 3] (what an exporter bakes into glTF maps).

        Returns:
            albedo [N, 3] and metallic [N, 1] in (0, 1), roughness [N, 1] in [min_roughness, 1].
        """
        raw = self.mlp(self.encoding(points))
        albedo, roughness, metallic = torch.sigmoid(raw).split([3, 1, 1], dim=-1)
        return {"albedo": albedo, "roughness": self.min_roughness + (1.0 - self.min_roughness) * roughness, "metallic": metallic}

    def sample_shading(self, cameras: CameraBatch, training: bool) -> Shading:
        """The environment is fixed (nothing is drawn): one "pbr" shading for every image."""
        return Shading("pbr", cameras.position)

    def shade(self, albedo: Tensor, normals: Tensor | None, points: Tensor, directions: Tensor, shading: Shading, image_index: Tensor) -> Tensor:
        """[N, 3] colour in [0, 1] of surface samples.

        Args:
            albedo: [N, 3] the representation's albedo, ignored: this material's field gives
                albedo at `points`.
            normals: [N, 3] unit normals.
            points: [N, 3] world points.
            directions: [N, 3] view ray directions (from the camera towards the points).
            shading, image_index: unused; the environment is the same for every image.
        """
        assert normals is not None, "PBRMaterial needs normals"
        return self.shade_textures(self.textures(points), normals, directions)

    def shade_textures(self, textures: dict[str, Tensor], normals: Tensor, directions: Tensor) -> Tensor:
        """[N, 3] colour in [0, 1] of surface samples whose `textures(points)` a renderer already
        has (it also needs their albedo): the field is evaluated once per sample."""
        diffuse, specular = split_sum_radiance(self.light, normals, -directions, **textures)
        return (diffuse + specular).clamp(0.0, 1.0)


def split_sum_radiance(light: EnvironmentLight, normals: Tensor, view: Tensor, albedo: Tensor, roughness: Tensor, metallic: Tensor) -> tuple[Tensor, Tensor]:
    """Linear radiance reflected towards `view`, split into its diffuse and specular parts.

    Args:
        light: the prefiltered environment.
        normals: [N, 3] unit normals.
        view: [N, 3] unit directions from the surface towards the eye.
        albedo: [N, 3]; roughness, metallic: [N, 1].

    Returns:
        diffuse, specular: [N, 3] each.
    """
    cosine = (normals * view).sum(-1, keepdim=True)
    reflections = 2.0 * cosine * normals - view
    # Back-facing samples (n.v < 0, e.g. an interpolated normal at a silhouette) are shaded as
    # grazing ones rather than left black.
    scale, bias = light.brdf(cosine.clamp(1e-4, 1.0), roughness)
    f0 = _DIELECTRIC_F0 + (albedo - _DIELECTRIC_F0) * metallic
    diffuse = albedo * (1.0 - metallic) * light.irradiance(normals)
    specular = light.specular(reflections, roughness) * (f0 * scale + bias)
    return diffuse, specular
