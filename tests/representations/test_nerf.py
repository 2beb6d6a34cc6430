"""framework.representations.nerf: the density bias a NeRF starts from, DreamFusion's ball or a
given solid (`shape`)."""

from __future__ import annotations

import torch
from torch import nn

from framework.representations.encodings import TriplaneEncoding
from framework.representations.nerf import NeRFField


class _Box(nn.Module):
    """The signed distance of the box |x|, |y|, |z| <= 0.4 (inside only: enough for a bias test)."""

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return (points.abs() - 0.4).amax(dim=-1)


def _field(**kwargs) -> NeRFField:
    torch.manual_seed(0)
    return NeRFField(TriplaneEncoding(resolution=8, channels=4), hidden=16, **kwargs)


def test_without_a_shape_the_bias_is_dreamfusions_ball() -> None:
    field = _field(blob_density=8.0, blob_radius=0.5)
    points = torch.tensor([[0.0, 0.0, 0.0], [0.25, 0.0, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(field._blob(points), torch.tensor([8.0, 4.0, -8.0]))


def test_a_shape_biases_the_density_by_its_depth() -> None:
    field = _field(blob_density=8.0, shape=_Box(), shape_depth=0.2)
    points = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.0, 0.0], [0.4, 0.0, 0.0], [0.0, 0.6, 0.0]])
    torch.testing.assert_close(field._blob(points), torch.tensor([16.0, 4.0, 0.0, -8.0]))
    density = field.density(torch.tensor([[0.39, 0.39, 0.0], [0.45, 0.45, 0.0]]))
    assert density[0] > 5 * density[1]  # a corner of the box is dense; just outside it is not (a ball would round it off)
