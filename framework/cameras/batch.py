"""What the datamodule yields every step: the cameras to render, and for image-to-3D the
reference view (image, mask and the camera it was taken from)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from framework.cameras.camera import CameraBatch
from framework.cameras.reference_image import prepare_reference_image

log = logging.getLogger(__name__)


@dataclass
class ReferenceView:
    """Attributes:
    image: [1, H, W, 3] in [0, 1], composited on white where the mask is 0.
    mask: [1, H, W, 1] foreground in [0, 1].
    cameras: the one camera the image was taken from, at the image's resolution.
    """

    image: Tensor
    mask: Tensor
    cameras: CameraBatch

    def __post_init__(self) -> None:
        if self.image.ndim != 4 or self.image.shape[-1] != 3 or self.mask.shape != (*self.image.shape[:3], 1):
            raise ValueError(f"reference image {tuple(self.image.shape)} and mask {tuple(self.mask.shape)}: need [1, H, W, 3] and [1, H, W, 1]")
        if (self.cameras.height, self.cameras.width) != tuple(self.image.shape[1:3]):
            raise ValueError(f"reference camera {self.cameras.height}x{self.cameras.width} does not match the image's {tuple(self.image.shape[1:3])}")

    @classmethod
    def from_file(cls, path: str | Path, cameras: CameraBatch, framing: str = "auto", fill: float = 0.6, log_notes: bool = True) -> "ReferenceView":
        """An image file as the view of the one square camera `cameras`: see
        `framework.cameras.reference_image` for what is done to it (masking, framing), logged
        unless `log_notes` is False (the same file prepared again at another resolution)."""
        if cameras.height != cameras.width:
            raise ValueError(f"the reference camera must be square, got {cameras.height}x{cameras.width}")
        prepared = prepare_reference_image(path, cameras.height, framing, fill)
        for note in prepared.notes if log_notes else []:
            log.info("image=%s: %s", path, note)
        return cls(prepared.image, prepared.mask, cameras)

    def to(self, device: torch.device | str) -> "ReferenceView":
        return replace(self, image=self.image.to(device), mask=self.mask.to(device), cameras=self.cameras.to(device))


@dataclass
class Batch:
    """Attributes:
    cameras: the B views to render this step.
    reference: the reference view of image-to-3D, or None.
    """

    cameras: CameraBatch
    reference: ReferenceView | None = None

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.cameras.to(device), self.reference.to(device) if self.reference is not None else None)
