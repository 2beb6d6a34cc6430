"""View-dependent prompts (DreamFusion): append the view a camera sees the object from."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

VIEWS: tuple[str, ...] = ("front", "side", "back", "overhead")


@dataclass(frozen=True)
class ViewThresholds:
    """Degrees: |azimuth| < front is "front", |azimuth| > 180 - back is "back", elevation >
    overhead is "overhead", anything else "side" (DreamFusion's defaults)."""

    front: float = 45.0
    back: float = 45.0
    overhead: float = 60.0


def view_index(elevation_deg: Tensor, azimuth_deg: Tensor, thresholds: ViewThresholds = ViewThresholds()) -> Tensor:
    """[B] index into `VIEWS` for each camera."""
    azimuth = (azimuth_deg + 180.0) % 360.0 - 180.0
    index = torch.full_like(azimuth, VIEWS.index("side"), dtype=torch.long)
    index[azimuth.abs() < thresholds.front] = VIEWS.index("front")
    index[azimuth.abs() > 180.0 - thresholds.back] = VIEWS.index("back")
    index[elevation_deg > thresholds.overhead] = VIEWS.index("overhead")
    return index


def view_dependent_prompt(prompt: str, view: str) -> str:
    return f"{prompt}, {view} view"


def view_captions(texts: list[str], elevation_deg: Tensor, azimuth_deg: Tensor) -> list[str]:
    """Each text with the view its camera [B] sees appended, as view-dependent guidance conditions."""
    return [view_dependent_prompt(text, VIEWS[view]) for text, view in zip(texts, view_index(elevation_deg, azimuth_deg).tolist(), strict=True)]
