"""Hold a Gaussian cloud's turn about the vertical axis through chosen stages.

A text-conditioned 2D prior has no preferred turn of an object about the up axis beyond what its
view words pin down, so over GSGEN's 1,000 steps a cube's or a pyramid's Gaussians turn 3-30
degrees away from the point sample they started from, while the sample's turn is the true one
(the phase of its 4-fold angular moment lies within 4 degrees of the true cube's and pyramid's at
seeds 0-2; docs/gsgen_notes.md). After every step of the held stages the cloud is turned about
the vertical line through its centroid back to the turn it had after the first held step: the
phase of its `symmetry`-fold angular moment sum_i r_i^2 exp(i k phi_i) over the centres
(k = `symmetry`), modulo 360 / k degrees. A cube is held by its faces. The hold acts only on a
cloud that is clearly k-fold (moment at least `min_strength` of sum_i r_i^2): a weaker k-fold
moment belongs to some other feature, such as a mug's handle, whose place the 2D prior's view
words set (holding a mug's 4-fold phase at the sample's put its handle on the wrong side), and a
sphere's or a cylinder's turn does not matter. Centres and orientations turn; SH colours of
degree above 0 (view-dependent) do not, so the hold is meant for clouds of degree 0, as GSGEN's are.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import pytorch_lightning as pl
import torch

from framework.callbacks.cloud_hold import CloudHold


def angular_moment(points: torch.Tensor, symmetry: int) -> torch.Tensor:
    """sum_i r_i^2 exp(i k phi_i) / sum_i r_i^2 (complex) of `points` [N, 3] about the vertical line
    through their centroid (k = `symmetry`): 0 for a shape turned into itself by 1/k of a circle."""
    offset = points[:, :2] - points[:, :2].mean(dim=0)
    planar = torch.complex(offset[:, 0].double(), offset[:, 1].double())
    radius = planar.abs().clamp_min(1e-12)
    return (planar**symmetry * radius ** (2 - symmetry)).sum() / radius.square().sum()


def turn_about_z(points: torch.Tensor, symmetry: int) -> torch.Tensor:
    """The turn (radians, in (-pi/k, pi/k]) of `points` [N, 3] about the vertical line through their
    centroid, read from the phase of their k-fold angular moment (k = `symmetry`)."""
    return torch.angle(angular_moment(points, symmetry)) / symmetry


def wrap_turn(angle: float, symmetry: int) -> float:
    """`angle` (radians) moved into (-pi/k, pi/k]: turns that differ by a k-th of a circle look alike."""
    period = 2 * math.pi / symmetry
    return angle - period * math.floor(angle / period + 0.5)


class HoldCloudTurn(CloudHold):
    """Args:
    stages: the stages whose steps are held (GSGEN: its geometry and appearance stages); none
        turns the hold off.
    symmetry: k of the angular moment read: 4 holds square shapes by their faces, 2 elongated ones.
    min_strength: the moment's magnitude (0 to 1) from which the cloud counts as k-fold and is held
        (GSGEN's cubes and pyramids reach 0.36-0.51, its mugs at most 0.29, cylinders and tori 0.15).
    """

    def __init__(self, stages: Sequence[str] = (), symmetry: int = 4, min_strength: float = 0.35) -> None:
        if symmetry < 1:
            raise ValueError(f"HoldCloudTurn: symmetry={symmetry} must be a positive integer")
        if not 0.0 <= min_strength <= 1.0:
            raise ValueError(f"HoldCloudTurn: min_strength={min_strength} must lie in [0, 1]")
        super().__init__(stages)
        self.symmetry = symmetry
        self.min_strength = min_strength
        self.turn: float | None = None

    @torch.no_grad()
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        cloud = self.held_cloud(pl_module)
        if cloud is None:
            return
        means = cloud.params["means"]
        moment = angular_moment(means, self.symmetry)
        turn = float(torch.angle(moment)) / self.symmetry
        if self.turn is None:
            self.turn = turn
        if float(moment.abs()) < self.min_strength:
            return
        angle = wrap_turn(self.turn - turn, self.symmetry)
        cos, sin = math.cos(angle), math.sin(angle)
        centre = means[:, :2].mean(dim=0)
        x, y = (means[:, :2] - centre).unbind(dim=-1)
        means[:, :2] = centre + torch.stack([cos * x - sin * y, sin * x + cos * y], dim=-1)
        # Orientations: the turn's quaternion (cos a/2, 0, 0, sin a/2) times each Gaussian's (w, x, y, z).
        quats = cloud.params["quats"]
        c, s = math.cos(angle / 2), math.sin(angle / 2)
        w, qx, qy, qz = quats.unbind(dim=-1)
        quats.copy_(torch.stack([c * w - s * qz, c * qx - s * qy, c * qy + s * qx, c * qz + s * w], dim=-1))

    def state_dict(self) -> dict[str, Any]:
        return {"turn": self.turn}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.turn = state_dict["turn"]
