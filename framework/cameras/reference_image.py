"""Reading the reference image of image-to-3D as users give it.

- RGBA: the alpha channel is the mask. RGB: the object is cut from its background, with rembg
  when it is installed (optional), else by the background's colour (the median of the border
  pixels; a plain backdrop, as product shots and renders have).
- Palette, greyscale and 16-bit files are converted rather than refused.
- Framing: the reference camera sees the object the way the world's renders frame it (centred, the
  larger side about 0.6 of the image). `auto` keeps an image that is framed like that (larger
  side 0.35-0.85 of the image, centre within 0.1 of the middle, off the border) and otherwise
  recentres and rescales the object to `fill`; `fit` always does; `keep` never does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

FRAMINGS = ("auto", "fit", "keep")
MIN_SIDE = 16
_KEPT_FILL = (0.35, 0.85)
_KEPT_CENTRE_OFFSET = 0.1
_BACKGROUND_DISTANCE = (0.04, 0.16)  # colour distance to the backdrop: background below, object above


@dataclass
class PreparedImage:
    image: Tensor  # [1, R, R, 3] in [0, 1], composited on white
    mask: Tensor  # [1, R, R, 1] in [0, 1]
    notes: list[str]  # what was done to it, for the log


def prepare_reference_image(path: str | Path, resolution: int, framing: str = "auto", fill: float = 0.6) -> PreparedImage:
    """The image at `path` as a square `resolution` reference view with its mask.

    Raises:
        ValueError: one line naming the file: unreadable, too small, or no foreground.
    """
    if framing not in FRAMINGS:
        raise ValueError(f"image framing={framing!r}: expected one of {FRAMINGS}")
    if not 0.1 <= fill <= 1.0:
        raise ValueError(f"image fill={fill}: the object's larger side as a share of the image must be in [0.1, 1]")
    rgba, notes = _read_rgba(path)
    height, width = rgba.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ValueError(f"image={str(path)!r} is {width}x{height} px: too small (at least {MIN_SIDE} px a side)")
    rgb, alpha = rgba[..., :3], rgba[..., 3]
    if alpha.min() >= 1.0:
        alpha, how = _segment(rgb)
        notes.append(f"no alpha channel: the object was cut out {how}")
    if (alpha > 0.5).sum() < max(4, 1e-3 * alpha.size):
        raise ValueError(f"image={str(path)!r} has no foreground: its alpha is empty or every pixel matches the background colour")
    rgb = rgb * alpha[..., None] + (1.0 - alpha[..., None])  # on white
    rgb, alpha = _square(rgb, alpha)
    if framing == "fit" or (framing == "auto" and not _framed(alpha)):
        rgb, alpha = _refit(rgb, alpha, fill, resolution)
        notes.append(f"recentred and rescaled so the object's larger side is {fill:g} of the image")
    image = _resize(rgb, resolution)  # composited before resizing: edges blend towards white
    mask = _resize(alpha[..., None], resolution)
    return PreparedImage(torch.from_numpy(image)[None].float(), torch.from_numpy(mask)[None].float(), notes)


def _read_rgba(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """[H, W, 4] floats in [0, 1] of any PIL-readable file."""
    notes: list[str] = []
    try:
        with Image.open(path) as picture:
            picture.load()
            if picture.mode in ("I;16", "I;16B", "I;16L", "I"):
                values = np.asarray(picture, dtype=np.float32)
                scale = 65535.0 if values.max() > 255 else 255.0
                grey = np.clip(values / scale, 0.0, 1.0)
                notes.append(f"{picture.mode} greyscale read as 16-bit" if scale > 255 else f"{picture.mode} greyscale")
                return np.dstack([grey, grey, grey, np.ones_like(grey)]), notes
            if picture.mode == "P":
                notes.append("palette image converted")
            rgba = np.asarray(picture.convert("RGBA"), dtype=np.float32) / 255.0
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"image={str(path)!r} is not a readable image file ({type(error).__name__})") from None
    return rgba, notes


def _segment(rgb: np.ndarray) -> tuple[np.ndarray, str]:
    """A soft foreground mask [H, W] of an RGB image without alpha."""
    try:
        import rembg
    except ImportError:
        border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
        backdrop = np.median(border, axis=0)
        distance = np.abs(rgb - backdrop).max(axis=-1)
        low, high = _BACKGROUND_DISTANCE
        return np.clip((distance - low) / (high - low), 0.0, 1.0), f"by its background colour {tuple(np.round(backdrop, 2).tolist())} (install rembg for photos)"
    cut = rembg.remove(Image.fromarray((rgb * 255).round().astype(np.uint8)))
    return np.asarray(cut.convert("RGBA"), dtype=np.float32)[..., 3] / 255.0, "by rembg"


def _square(rgb: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pad to a square on white (no alpha), keeping the centre."""
    height, width = alpha.shape
    side = max(height, width)
    if height == width:
        return rgb, alpha
    top, left = (side - height) // 2, (side - width) // 2
    square_rgb = np.ones((side, side, 3), dtype=rgb.dtype)
    square_alpha = np.zeros((side, side), dtype=alpha.dtype)
    square_rgb[top : top + height, left : left + width] = rgb
    square_alpha[top : top + height, left : left + width] = alpha
    return square_rgb, square_alpha


def _bounds(alpha: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(alpha > 0.5)
    return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1


def _framed(alpha: np.ndarray) -> bool:
    """Whether the object already sits as the world's renders frame it."""
    side = alpha.shape[0]
    top, bottom, left, right = _bounds(alpha)
    larger = max(bottom - top, right - left) / side
    offset = max(abs((top + bottom) / 2 / side - 0.5), abs((left + right) / 2 / side - 0.5))
    touches = top == 0 or left == 0 or bottom == side or right == side
    return _KEPT_FILL[0] <= larger <= _KEPT_FILL[1] and offset <= _KEPT_CENTRE_OFFSET and not touches


def _refit(rgb: np.ndarray, alpha: np.ndarray, fill: float, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop to the object and paste it centred, its larger side `fill` of a square canvas (at
    least `resolution` wide, so centring is exact to a pixel of the final image)."""
    top, bottom, left, right = _bounds(alpha)
    crop_rgb, crop_alpha = rgb[top:bottom, left:right], alpha[top:bottom, left:right]
    larger = max(bottom - top, right - left)
    side = max(resolution, round(larger / fill))
    scale = fill * side / larger
    height, width = max(1, round((bottom - top) * scale)), max(1, round((right - left) * scale))
    canvas_rgb = np.ones((side, side, 3), dtype=np.float32)
    canvas_alpha = np.zeros((side, side), dtype=np.float32)
    y, x = (side - height) // 2, (side - width) // 2
    canvas_rgb[y : y + height, x : x + width] = _resize_to(crop_rgb, height, width)
    canvas_alpha[y : y + height, x : x + width] = _resize_to(crop_alpha[..., None], height, width)[..., 0]
    return canvas_rgb, canvas_alpha


def _resize(values: np.ndarray, resolution: int) -> np.ndarray:
    return _resize_to(values, resolution, resolution)


def _resize_to(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """[H, W, C] floats resized with antialiasing (box filter when shrinking, bilinear otherwise)."""
    if values.shape[:2] == (height, width):
        return values.astype(np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).permute(2, 0, 1)[None]
    resized = torch.nn.functional.interpolate(tensor, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return resized[0].permute(1, 2, 0).clamp(0.0, 1.0).numpy()
