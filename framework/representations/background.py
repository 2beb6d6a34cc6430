"""Backgrounds behind the object: composited as rgb + (1 - opacity) * background."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SolidBackground(nn.Module):
    """One colour (white by default: the bundled prior and most object priors expect it)."""

    def __init__(self, color: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> None:
        super().__init__()
        self.register_buffer("color", torch.tensor(color, dtype=torch.float32), persistent=False)

    def forward(self, directions: Tensor, training: bool) -> Tensor:
        """directions: [B, H, W, 3] -> colours [B, H, W, 3]."""
        return self.color.expand_as(directions)


class RandomSolidBackground(SolidBackground):
    """A random solid colour per image in training (stops the field from painting the backdrop
    into the object); `color` in evaluation."""

    def __init__(self, color: tuple[float, float, float] = (1.0, 1.0, 1.0), seed: int = 0) -> None:
        super().__init__(color)
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, directions: Tensor, training: bool) -> Tensor:
        if not training:
            return super().forward(directions, training)
        colours = torch.rand(directions.shape[0], 1, 1, 3, generator=self.generator).to(directions)
        return colours.expand_as(directions)


class MLPBackground(nn.Module):
    """A small learnable MLP of the view direction (DreamFusion's environment background)."""

    def __init__(self, hidden: int = 32, n_frequencies: int = 4) -> None:
        super().__init__()
        self.register_buffer("frequencies", 2.0 ** torch.arange(n_frequencies, dtype=torch.float32), persistent=False)
        in_dim = 3 + 6 * n_frequencies
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def forward(self, directions: Tensor, training: bool) -> Tensor:
        scaled = directions[..., None] * self.frequencies  # [..., 3, F]
        features = torch.cat([directions, scaled.sin().flatten(-2), scaled.cos().flatten(-2)], dim=-1)
        return torch.sigmoid(self.mlp(features))
