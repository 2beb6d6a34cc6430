"""Reference-view losses of image-to-3D (Zero-1-to-3, DreamGaussian's image mode): the render from
the reference camera must show the reference image. The system renders that view (on white,
unaugmented) into `render["reference"]` on the steps where one of these losses is weighted."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from framework.cameras.batch import Batch


def _reference_render(render: dict, batch: Batch) -> dict[str, Tensor]:
    if batch.reference is None or "reference" not in render:
        raise ValueError("a reference-view loss needs the reference image: pass image=<file>")
    return render["reference"]


class ReferenceRgb:
    """MSE between the reference render and the reference image (both on white)."""

    needs_reference_render = True

    def __call__(self, render: dict, batch: Batch) -> Tensor:
        reference = _reference_render(render, batch)
        return F.mse_loss(reference["rgb"], batch.reference.image.to(reference["rgb"]))  # type: ignore[union-attr]


class ReferenceMask:
    """MSE between the reference render's opacity and the reference mask."""

    needs_reference_render = True

    def __call__(self, render: dict, batch: Batch) -> Tensor:
        reference = _reference_render(render, batch)
        return F.mse_loss(reference["opacity"], batch.reference.mask.to(reference["opacity"]))  # type: ignore[union-attr]
