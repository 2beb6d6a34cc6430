"""The NeRF field: a positional encoding (hash grid or triplane) with density and albedo heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _mlp(in_dim: int, hidden: int, n_hidden_layers: int, out_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(n_hidden_layers):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class NeRFField(nn.Module):
    """Density and albedo of points in the unit sphere.

    Density is softplus(raw + blob(x)): DreamFusion's "blob" bias, `blob_density * (1 - |x| /
    blob_radius)`, starts optimisation from a fuzzy ball at the centre instead of empty space.
    Given a `shape` (a signed distance, e.g. `PointPriorShape`: a 3D prior's answer to the prompt),
    the bias is `blob_density * -shape(x) / shape_depth` instead: the density starts as that solid,
    holes included, which a 2D prior would rarely carve out of a ball.
    Normals are the normalised negative density gradient, by forward differences (grid encodings
    have no cheap double backward on CPU).

    Args:
        encoding: maps points [N, 3] to features [N, encoding.out_dim].
        hidden, n_hidden_layers: width and depth of each head.
        blob_density, blob_radius: the initial density bias.
        shape: a module giving the signed distance (negative inside) of the solid to start from
            instead of the ball; None: the ball.
        shape_depth: with a shape, the depth inside it at which the bias reaches blob_density.
        normal_epsilon: step of the finite differences, in world units.
    """

    def __init__(
        self,
        encoding: nn.Module,
        hidden: int = 64,
        n_hidden_layers: int = 1,
        blob_density: float = 10.0,
        blob_radius: float = 0.5,
        shape: nn.Module | None = None,
        shape_depth: float = 0.3,
        normal_epsilon: float = 0.01,
    ) -> None:
        super().__init__()
        self.encoding = encoding
        self.density_head = _mlp(encoding.out_dim, hidden, n_hidden_layers, 1)
        self.albedo_head = _mlp(encoding.out_dim, hidden, n_hidden_layers, 3)
        self.blob_density = blob_density
        self.blob_radius = blob_radius
        self.shape = shape
        self.shape_depth = shape_depth
        self.normal_epsilon = normal_epsilon

    def _blob(self, points: Tensor) -> Tensor:
        if self.shape is None:
            return self.blob_density * (1.0 - points.norm(dim=-1) / self.blob_radius)
        return self.blob_density * -self.shape(points) / self.shape_depth

    def density(self, points: Tensor) -> Tensor:
        """points: [N, 3] -> density [N] (non-negative)."""
        raw = self.density_head(self.encoding(points))[..., 0]
        return F.softplus(raw + self._blob(points))

    def albedo(self, points: Tensor) -> Tensor:
        """points: [N, 3] -> albedo [N, 3] in [0, 1] (a mesh made from this field keeps its colour)."""
        return torch.sigmoid(self.albedo_head(self.encoding(points)))

    def forward(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """points: [N, 3] -> (density [N], albedo [N, 3] in [0, 1])."""
        features = self.encoding(points)
        density = F.softplus(self.density_head(features)[..., 0] + self._blob(points))
        albedo = torch.sigmoid(self.albedo_head(features))
        return density, albedo

    def normals(self, points: Tensor, density: Tensor) -> Tensor:
        """Unit outward normals [N, 3] at `points` [N, 3], given their `density` [N]."""
        offsets = torch.eye(3, dtype=points.dtype, device=points.device) * self.normal_epsilon
        shifted = (points[:, None, :] + offsets).reshape(-1, 3)
        gradient = (self.density(shifted).view(-1, 3) - density[:, None]) / self.normal_epsilon
        return -F.normalize(gradient, dim=-1, eps=1e-6)
