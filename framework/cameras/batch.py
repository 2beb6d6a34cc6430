"""What the datamodule yields every step: the cameras to render, and for image-to-3D the
reference view (image, mask and the camera it was taken from)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from framework.cameras.camera import CameraBatch


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
    def from_file(cls, path: str | Path, cameras: CameraBatch) -> "ReferenceView":
        """An RGBA or RGB image resized to the camera's resolution. The mask is the alpha channel,
        or, without one, every pixel that is not (near) white."""
        try:
            with Image.open(path) as picture:
                rgba = picture.convert("RGBA").resize((cameras.width, cameras.height), Image.BILINEAR)
        except (OSError, SyntaxError, ValueError) as error:
            raise ValueError(f"image={str(path)!r} is not a readable image file ({type(error).__name__})") from None
        values = torch.from_numpy(np.asarray(rgba, dtype=np.float32) / 255.0)[None]
        rgb, alpha = values[..., :3], values[..., 3:]
        if bool((alpha < 1).any()):
            mask = alpha
        else:
            mask = (rgb.min(dim=-1, keepdim=True).values < 0.95).float()
        image = rgb * mask + (1 - mask)
        return cls(image, mask, cameras)

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
