"""Image grids and videos of renders."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from torch import Tensor

from framework.utils.atomic import atomic_path


def to_uint8(images: Tensor) -> np.ndarray:
    """[..., 3] floats in [0, 1] -> uint8 numpy."""
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def image_grid(panels: list[Tensor]) -> np.ndarray:
    """Panels, each [B, H, W, 3], as one uint8 image: a row per panel, a column per view."""
    rows = [torch.cat(list(panel), dim=1) for panel in panels]
    return to_uint8(torch.cat(rows, dim=0))


def write_video(path: str | Path, frames: np.ndarray, fps: int = 20) -> Path:
    """Write frames [N, H, W, 3] uint8 as an H.264 MP4 (atomically), padding sides to multiples
    of 16 with white (ffmpeg's macro-block size)."""
    height, width = frames.shape[1:3]
    pad_h, pad_w = -height % 16, -width % 16
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), constant_values=255)
    path = Path(path)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, frames, extension=".mp4", fps=fps, codec="libx264", macro_block_size=16)
    return path
