"""An environment light for physically based materials, prefiltered for the split-sum approximation.

The light is an equirectangular (lat-long) radiance map of the +z-up world
(`framework.cameras.camera`): row i looks at polar angle `theta = (i + 0.5) * pi / H` from +z
(row 0 is the zenith), column j at azimuth `phi = -pi + (j + 0.5) * 2 * pi / W` from +x towards +y.

Shading a glossy surface under it needs the integral of radiance times BRDF over the hemisphere,
per pixel; the split sum (Karis 2013, as nvdiffrec uses it) factors that integral into parts that
are computed once, here, at construction:
    - `irradiance(normals)`: the cosine-weighted mean radiance, what a white Lambertian surface
      reflects (exactly 1 under a constant white environment);
    - `specular(reflections, roughness)`: radiance averaged over the GGX lobe around the
      reflection direction (taking normal = view = reflection), for a few roughness levels,
      interpolated across them;
    - `brdf(n_dot_v, roughness)`: the (scale, bias) of the BRDF's hemispherical integral under
      white light, `integral = F0 * scale + bias` (Schlick Fresnel), a 2D table filled by
      importance sampling GGX.
Roughness is the perceptual one; the GGX width is `alpha = roughness ** 2` everywhere.

Everything is a non-persistent buffer: derived from the map, rebuilt identically by the
constructor, moved by `.to(device)`, never written to checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class EnvironmentLight(nn.Module):
    """Light arriving from every direction, prefiltered once for the split sum.

    Not a `CameraLight`: it has no direction per camera; materials ask it for radiance,
    irradiance, prefiltered specular radiance and the BRDF table instead.

    Args:
        radiance: [H, W, 3] linear radiance, equirectangular with W = 2 * H; None: `sky_radiance()`.
        intensity: multiplies the radiance (exposure).
        n_levels: roughness levels of the prefiltered specular maps, evenly spaced from
            `min_roughness` to 1 (nvdiffrec uses 6).
        min_roughness: roughness of the sharpest level; lower roughness is looked up there.
        lut_size: entries of the BRDF table per side, (n.v, roughness) at cell centres.
        lut_samples: GGX samples per table entry (a Hammersley set, so the table is deterministic).
    """

    def __init__(
        self,
        radiance: Tensor | None = None,
        intensity: float = 1.0,
        n_levels: int = 6,
        min_roughness: float = 0.08,
        lut_size: int = 32,
        lut_samples: int = 1024,
    ) -> None:
        super().__init__()
        if radiance is None:
            radiance = sky_radiance()
        if radiance.ndim != 3 or radiance.shape[2] != 3 or radiance.shape[1] != 2 * radiance.shape[0]:
            raise ValueError(f"EnvironmentLight radiance shape {tuple(radiance.shape)}: must be [H, 2H, 3]")
        if not 0.0 < min_roughness < 1.0:
            raise ValueError(f"EnvironmentLight min_roughness={min_roughness}: must be in (0, 1)")
        if n_levels < 2:
            raise ValueError(f"EnvironmentLight n_levels={n_levels}: needs at least 2")
        if intensity < 0.0:
            raise ValueError(f"EnvironmentLight intensity={intensity}: must be non-negative")
        radiance = radiance.detach().float() * intensity
        self.min_roughness = min_roughness
        self.n_levels = n_levels
        levels = torch.linspace(min_roughness, 1.0, n_levels)
        irradiance, specular = _prefilter(radiance, levels)
        self.register_buffer("_radiance", _pack(radiance[None]), persistent=False)
        self.register_buffer("_irradiance", _pack(irradiance[None]), persistent=False)
        self.register_buffer("_specular", _pack(specular), persistent=False)
        self.register_buffer("_lut", brdf_lut(lut_size, lut_samples).permute(2, 0, 1)[None], persistent=False)

    def radiance(self, directions: Tensor) -> Tensor:
        """[N, 3] radiance arriving from `directions` [N, 3] (any length), bilinear."""
        return _lookup(self._radiance, directions, None)

    def irradiance(self, normals: Tensor) -> Tensor:
        """[N, 3] cosine-weighted mean radiance over the hemisphere around `normals` [N, 3]."""
        return _lookup(self._irradiance, normals, None)

    def specular(self, reflections: Tensor, roughness: Tensor) -> Tensor:
        """[N, 3] radiance prefiltered with the GGX lobe of `roughness` [N, 1] around
        `reflections` [N, 3]: bilinear in direction, linear across the roughness levels."""
        level = (roughness[:, 0] - self.min_roughness) / (1.0 - self.min_roughness) * (self.n_levels - 1)
        return _lookup(self._specular, reflections, level)

    def brdf(self, n_dot_v: Tensor, roughness: Tensor) -> tuple[Tensor, Tensor]:
        """(scale, bias), each [N, 1], of the white-light BRDF integral at `n_dot_v`, `roughness`
        [N, 1] (bilinear; outside the table's cell centres, its border)."""
        grid = torch.stack([n_dot_v[:, 0], roughness[:, 0]], dim=-1) * 2.0 - 1.0  # x: n.v, y: roughness
        values = F.grid_sample(self._lut, grid[None, None], mode="bilinear", padding_mode="border", align_corners=False)
        scale, bias = values[0, :, 0].T.split(1, dim=1)
        return scale, bias


def sky_radiance(
    height: int = 32,
    sun_elevation_deg: float = 45.0,
    sun_azimuth_deg: float = -30.0,
    sun_strength: float = 8.0,
    sun_width_deg: float = 10.0,
    zenith: Sequence[float] = (0.30, 0.50, 0.95),
    horizon: Sequence[float] = (0.85, 0.90, 1.00),
    ground: Sequence[float] = (0.30, 0.27, 0.24),
) -> Tensor:
    """The default environment, procedural so that nothing is downloaded: a blue sky brightening
    towards the horizon, a warm grey ground, and a soft sun (a Gaussian of the angle to its centre,
    wide enough for a 32-row map to resolve) in front of the object (+x), raised and to the left as
    seen from a camera in front, like the bundled world's `CameraLight`.

    `zenith`, `horizon` and `ground` are the sky's and the ground's linear colours (a neutral,
    brighter set suits a prior whose images were lit white, as the bundled world's).

    Returns:
        [height, 2 * height, 3] linear radiance.
    """
    directions = equirect_directions(height, 2 * height)
    up = directions[..., 2:]
    zenith, horizon, ground = torch.tensor(zenith), torch.tensor(horizon), torch.tensor(ground)
    sky = horizon + (zenith - horizon) * up.clamp(min=0.0).sqrt()
    above = ((up + 0.05) / 0.1).clamp(0.0, 1.0)  # a soft horizon (about 6 degrees) that does not alias
    radiance = ground + (sky - ground) * above
    elevation, azimuth = math.radians(sun_elevation_deg), math.radians(sun_azimuth_deg)
    sun = torch.tensor([math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)])
    angle = torch.acos((directions @ sun).clamp(-1.0, 1.0))
    return radiance + sun_strength * torch.exp(-((angle / math.radians(sun_width_deg)) ** 2))[..., None] * torch.tensor([1.0, 0.95, 0.85])


def equirect_directions(height: int, width: int) -> Tensor:
    """[height, width, 3] unit directions of the texel centres (the module's layout)."""
    theta = (torch.arange(height) + 0.5) * math.pi / height
    phi = -math.pi + (torch.arange(width) + 0.5) * 2.0 * math.pi / width
    theta, phi = torch.meshgrid(theta, phi, indexing="ij")
    return torch.stack([theta.sin() * phi.cos(), theta.sin() * phi.sin(), theta.cos()], dim=-1)


def ggx_distribution(cos_h: Tensor, alpha: Tensor | float) -> Tensor:
    """GGX (Trowbridge-Reitz) normal distribution D at `cos_h` = n.h, normalised so that
    the integral of D * n.h over the hemisphere is 1."""
    alpha2 = alpha * alpha
    return alpha2 / (math.pi * (cos_h * cos_h * (alpha2 - 1.0) + 1.0) ** 2)


def smith_g1(cos: Tensor, alpha: Tensor | float) -> Tensor:
    """Smith's GGX masking for one direction at `cos` = n.v or n.l (the exact form, not
    Schlick's k-approximation); the full G is the product over view and light."""
    alpha2 = alpha * alpha
    return 2.0 * cos / (cos + (alpha2 + (1.0 - alpha2) * cos * cos).sqrt())


def brdf_lut(size: int = 32, samples: int = 1024) -> Tensor:
    """The split sum's BRDF table: for n.v and roughness at cell centres `(i + 0.5) / size`,
    the integral over the hemisphere of `f * n.l / F0-part` under white light, split as
    `F0 * scale + bias` with Schlick's `F = F0 + (1 - F0) * (1 - v.h)^5`.

    Half vectors are importance sampled from `D * n.h` (a Hammersley set); the estimator of
    `integral f * n.l` is then `G * F * v.h / (n.v * n.h)`, with zero where l falls under the
    surface.

    Returns:
        [size, size, 2] (scale, bias), indexed [roughness, n.v].
    """
    cells = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    alpha = (cells**2)[:, None, None]  # [roughness, 1, 1]
    n_dot_v = cells[None, :, None]  # [1, n.v, 1]
    index = torch.arange(samples, dtype=torch.float64)
    u1, u2 = index / samples, _radical_inverse(samples)
    # Invert the CDF of D * n.h in cos^2(theta_h); phi uniform. Samples run along the last axis.
    cos_h = ((1.0 - u1) / (1.0 + (alpha * alpha - 1.0) * u1)).sqrt()  # [roughness, 1, samples]
    sin_h = (1.0 - cos_h * cos_h).clamp(min=0.0).sqrt()
    # View in the xz plane, normal +z: n.v = v_z, so v.h = sin_v * h_x + cos_v * h_z.
    v_dot_h = (1.0 - n_dot_v**2).sqrt() * sin_h * torch.cos(2.0 * math.pi * u2) + n_dot_v * cos_h
    n_dot_l = 2.0 * v_dot_h * cos_h - n_dot_v  # l = 2 (v.h) h - v
    visible = (n_dot_l > 0.0) & (v_dot_h > 0.0)
    geometry = smith_g1(n_dot_v, alpha) * smith_g1(n_dot_l.clamp(min=0.0), alpha)
    weight = torch.where(visible, geometry * v_dot_h / (n_dot_v * cos_h), 0.0)
    fresnel = (1.0 - v_dot_h.clamp(0.0, 1.0)) ** 5
    scale = (weight * (1.0 - fresnel)).mean(-1)
    bias = (weight * fresnel).mean(-1)
    return torch.stack([scale, bias], dim=-1).float()


def _radical_inverse(samples: int) -> Tensor:
    """Van der Corput base 2 of 0..samples-1: the second Hammersley coordinate."""
    index = torch.arange(samples, dtype=torch.int64)
    result = torch.zeros(samples, dtype=torch.float64)
    for bit in range(max(samples - 1, 1).bit_length()):
        result += ((index >> bit) & 1).double() * 0.5 ** (bit + 1)
    return result


def _prefilter(radiance: Tensor, roughness_levels: Tensor) -> tuple[Tensor, Tensor]:
    """Irradiance [H, W, 3] and GGX-prefiltered maps [L, H, W, 3] of `radiance` [H, W, 3].

    Both are direct convolutions over the texels (quadrature weight: solid angle), with weights
    normalised per output texel so that a constant map stays constant:
        irradiance:  max(r.l, 0)
        specular:    D(r.h) * max(r.l, 0) with h = normalize(r + l), taking n = v = r,
                     which is what Karis's importance-sampled estimator converges to.
    D depends on l only through c = r.l, since (r.h)^2 = (1 + c) / 2. A lobe narrower than a
    texel (the sharpest level) leaves the map as it is.

    The weights between texels depend on their rows and the difference of their columns only, so
    each output row's kernel [H, W] is built once (for output column 0) and applied to all
    columns as a circular cross-correlation along the azimuth, through the FFT.
    """
    height, width, _ = radiance.shape
    directions = equirect_directions(height, width).double()
    theta = (torch.arange(height, dtype=torch.float64) + 0.5) * math.pi / height
    solid_angle = theta.sin() * (math.pi / height) * (2.0 * math.pi / width)  # [H], per row
    cosine = torch.einsum("ic,jkc->ijk", directions[:, 0], directions).clamp(min=0.0)  # [H out, H, W]
    diffuse = cosine * solid_angle[:, None]
    alpha = (roughness_levels.double() ** 2)[:, None, None, None]  # [L, 1, 1, 1]
    glossy = ggx_distribution(((1.0 + cosine) / 2.0).sqrt(), alpha) * diffuse  # [L, H out, H, W]
    source = torch.fft.rfft(radiance.double(), dim=1)  # [H, W // 2 + 1, 3]

    def correlate(kernel: Tensor) -> Tensor:
        """[..., H out, H, W] kernels -> [..., H out, W, 3] normalised filtered maps."""
        spectrum = torch.einsum("...ijk,jkc->...ikc", torch.fft.rfft(kernel, dim=-1).conj(), source)
        return torch.fft.irfft(spectrum, n=width, dim=-2) / kernel.sum((-2, -1))[..., None, None]

    return correlate(diffuse).float(), correlate(glossy).float()


def _pack(maps: Tensor) -> Tensor:
    """[L, H, W, 3] maps -> [1, 3, L, H, W + 2] for `grid_sample`, with one column wrapped
    around at each side so that bilinear lookups cross the seam at phi = +-pi."""
    maps = torch.cat([maps[:, :, -1:], maps, maps[:, :, :1]], dim=2)
    return maps.permute(3, 0, 1, 2)[None].contiguous()


def _lookup(packed: Tensor, directions: Tensor, level: Tensor | None) -> Tensor:
    """Sample packed maps [1, 3, L, H, W + 2] at `directions` [N, 3] and fractional `level` [N]
    (None: level 0) -> [N, 3]. Trilinear; rows clamp at the poles, columns wrap."""
    n_levels, height, width = packed.shape[2], packed.shape[3], packed.shape[4] - 2
    x, y, z = F.normalize(directions, dim=-1).unbind(-1)
    # Guards keep gradients finite on the poles, where the azimuth is undefined.
    near_pole = x * x + y * y < 1e-12
    x = torch.where(near_pole, torch.ones_like(x), x)
    phi = torch.atan2(y, x)
    theta = torch.atan2(torch.where(near_pole, torch.zeros_like(x), (x * x + y * y).clamp(min=1e-12).sqrt()), z)
    column = (phi + math.pi) / (2.0 * math.pi) * width + 0.5  # texel j's centre at j + 1 in the padded map
    row = theta / math.pi * height - 0.5
    if level is None or n_levels == 1:
        level = torch.zeros_like(x)
    grid = torch.stack(
        [
            column / (width + 1) * 2.0 - 1.0,
            row / max(height - 1, 1) * 2.0 - 1.0,
            level.clamp(0.0, n_levels - 1) / max(n_levels - 1, 1) * 2.0 - 1.0,
        ],
        dim=-1,
    )
    values = F.grid_sample(packed, grid.to(packed.dtype)[None, None, None], mode="bilinear", padding_mode="border", align_corners=True)
    return values[0, :, 0, 0].T.to(directions.dtype)
