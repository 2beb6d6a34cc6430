"""Tiny parts for testing the system's mechanisms (stages, slots, trainable guidance parts,
conditions, feed-forward) without a diffusion model: each does real, differentiable work."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from framework.cameras.batch import Batch
from framework.cameras.camera import CameraBatch
from framework.guidance.condition import Condition
from framework.representations.gaussians import GaussianModel, rgb_to_sh


class ToyBlob(nn.Module):
    """A soft disk of `n` colour cells: its size and colours are the parameters."""

    def __init__(self, n: int = 2, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.colours = nn.Parameter(torch.rand(n, 3, generator=generator))
        self.log_radius = nn.Parameter(torch.tensor(-0.5))

    def shape_state(self) -> dict[str, int]:
        return {"n": self.colours.shape[0]}

    def load_shape_state(self, state: Mapping[str, int]) -> None:
        self.colours = nn.Parameter(torch.empty(int(state["n"]), 3))


class ToyRenderer(nn.Module):
    """Renders a `ToyBlob` as a centred soft disk whose colour is the mean of its cells."""

    def update(self, representation: nn.Module, step: int) -> None:
        pass

    def forward(self, blob: ToyBlob, material: nn.Module, background: nn.Module, cameras: CameraBatch, shading: Any, training: bool) -> dict[str, Tensor]:
        rows = torch.linspace(-1, 1, cameras.height)
        cols = torch.linspace(-1, 1, cameras.width)
        radius = torch.sqrt(rows[:, None] ** 2 + cols[None, :] ** 2)
        opacity = torch.sigmoid((blob.log_radius.exp() - radius) * 10.0)[None, :, :, None].expand(cameras.batch_size, -1, -1, 1)
        colour = torch.sigmoid(blob.colours).mean(0)
        _, directions = cameras.rays()
        rgb = opacity * colour + (1 - opacity) * background(directions, training)
        return {"rgb": rgb, "opacity": opacity, "depth": opacity * 2.8, "normal": torch.zeros_like(rgb)}


class GrowBlob:
    """A conversion: a blob with twice as many cells, each a copy of one of the source's."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __call__(self, source: ToyBlob, render: Callable[[CameraBatch], dict]) -> ToyBlob:
        grown = ToyBlob(2 * source.colours.shape[0])
        with torch.no_grad():
            grown.colours.copy_(source.colours.repeat(2, 1))
            grown.log_radius.copy_(source.log_radius)
        return grown

    def placeholder(self, shape_state: Mapping[str, int], source: nn.Module | None = None) -> ToyBlob:
        return ToyBlob(int(shape_state["n"]))


class ToyGuidance:
    """Pulls renders towards a colour, with noise from its own generator; optionally with a
    trainable camera embedding beside a frozen layer (which must never reach a checkpoint)."""

    def __init__(self, colour: tuple[float, float, float] = (1.0, 0.0, 0.0), trainable: bool = False, seed: int = 0) -> None:
        self.colour = torch.tensor(colour)
        self.generator = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):  # frozen "prior" weights: the same in every run
            torch.manual_seed(seed)
            self.frozen = nn.Linear(1, 3).requires_grad_(False)
            self.camera_embedding = nn.Linear(1, 3) if trainable else None
        self.conditions: list[Condition] = []

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"camera_embedding": self.camera_embedding} if self.camera_embedding is not None else {}

    def __call__(self, rgb: Tensor, condition: Condition, step: int) -> dict[str, Tensor]:
        self.conditions.append(condition)
        target = self.colour + 0.01 * torch.randn(3, generator=self.generator)
        if self.camera_embedding is not None:
            shift = self.camera_embedding(condition.cameras.elevation_deg[:, None] / 90.0) + self.frozen(condition.cameras.azimuth_deg[:, None] / 180.0)
            target = target + 0.1 * torch.tanh(shift)[:, None, None, :]
        return {"loss_toy": ((rgb - target) ** 2).mean(), "target_red": target.mean()}


class MeanColourGaussians(nn.Module):
    """A feed-forward 'reconstructor': a ball of Gaussians coloured like the reference image's
    foreground."""

    def __init__(self, n: int = 64, radius: float = 0.4) -> None:
        super().__init__()
        self.n = n
        self.radius = radius

    def forward(self, batch: Batch) -> GaussianModel:
        assert batch.reference is not None
        mask = batch.reference.mask[0]
        colour = (batch.reference.image[0] * mask).sum((0, 1)) / mask.sum().clamp(min=1)
        generator = torch.Generator().manual_seed(0)
        means = torch.nn.functional.normalize(torch.randn(self.n, 3, generator=generator), dim=-1) * self.radius * torch.rand(self.n, 1, generator=generator) ** (1 / 3)
        return GaussianModel.from_tensors(
            {
                "means": means,
                "scales": torch.full((self.n, 3), -2.5),
                "quats": torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(self.n, 1),
                "opacities": torch.full((self.n,), 3.0),
                "sh0": rgb_to_sh(colour.expand(self.n, 3)).reshape(self.n, 1, 3),
            }
        )
