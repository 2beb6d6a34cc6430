"""Writing renders: PNGs, image grids and turntable videos, all written atomically."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from torch import Tensor

from framework.utils.atomic import atomic_path


def to_uint8(images: Tensor) -> np.ndarray:
    """Floats in [0, 1] (any shape) -> rounded, clamped uint8 numpy."""
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def save_png(path: str | Path, image: Tensor) -> None:
    """Write an image [H, W, 3] or a mask [H, W] with values in [0, 1] as a PNG."""
    if image.ndim not in (2, 3):
        raise ValueError(f"{path}: expected an image [H, W, 3] or a mask [H, W], got shape {tuple(image.shape)}")
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, to_uint8(image), extension=".png")


def image_grid(images: Tensor, padding: int = 0) -> Tensor:
    """Tile images [R, C, H, W, 3] into one image, with `padding` white pixels between tiles."""
    rows, cols, height, width, channels = images.shape
    grid = torch.ones(rows * (height + padding) + padding, cols * (width + padding) + padding, channels)
    for r in range(rows):
        for c in range(cols):
            top, left = padding + r * (height + padding), padding + c * (width + padding)
            grid[top : top + height, left : left + width] = images[r, c]
    return grid


def write_video(path: str | Path, frames: np.ndarray, fps: int = 20) -> Path:
    """Write frames [N, H, W, 3] uint8 as an H.264 MP4, padding sides to multiples of 16 with
    white (ffmpeg's macro-block size)."""
    height, width = frames.shape[1:3]
    pad_h, pad_w = -height % 16, -width % 16
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), constant_values=255)
    path = Path(path)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, frames, extension=".mp4", fps=fps, codec="libx264", macro_block_size=16)
    return path
