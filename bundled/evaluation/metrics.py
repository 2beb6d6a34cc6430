"""Image metrics against the ground-truth objects, and the classifiers the prior's evaluation uses.

Images are [..., H, W, 3] in [0, 1] on a white background; masks are [..., H, W], soft (coverage
in [0, 1]) or boolean, and are thresholded at 0.5 wherever a hard region is needed.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import Tensor


UNCLASSIFIED = -1  # what the classifiers answer when the evidence is empty or tied


def hard_mask(mask: Tensor) -> Tensor:
    """Boolean [..., H, W]: coverage at least 0.5 (booleans pass through)."""
    return mask if mask.dtype == torch.bool else mask >= 0.5


def mask_iou(predicted: Tensor, target: Tensor) -> Tensor:
    """Intersection over union [...] of two masks [..., H, W] (1 when both are empty)."""
    predicted, target = hard_mask(predicted), hard_mask(target)
    intersection = (predicted & target).sum(dim=(-2, -1)).float()
    union = (predicted | target).sum(dim=(-2, -1)).float()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))


def color_error(
    predicted_rgb: Tensor,
    target_rgb: Tensor,
    predicted_mask: Tensor,
    target_mask: Tensor,
    region: Literal["intersection", "target"] = "intersection",
) -> Tensor:
    """Mean absolute RGB difference [...] over a region of the images [..., H, W, 3].

    "intersection" (both masks cover the pixel) measures colour alone; "target" (the true mask)
    also charges missing geometry, which shows the background there. NaN where the region is
    empty: the colour is then undefined, not perfect.
    """
    if region == "intersection":
        pixels = hard_mask(predicted_mask) & hard_mask(target_mask)
    elif region == "target":
        pixels = hard_mask(target_mask)
    else:
        raise ValueError(f"region={region!r} must be 'intersection' or 'target'")
    difference = (predicted_rgb - target_rgb).abs().mean(dim=-1)
    count = pixels.sum(dim=(-2, -1)).float()
    total = (difference * pixels).sum(dim=(-2, -1))
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))


def foreground_mask(rgb: Tensor, threshold: float = 0.15) -> Tensor:
    """Boolean [..., H, W]: pixels of an image [..., H, W, 3] on white whose darkest channel lies
    more than `threshold` below white (every colour of the world is saturated or shaded enough)."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold={threshold} must lie in (0, 1)")
    return (1.0 - rgb.amin(dim=-1)) > threshold


def mean_colour(rgb: Tensor, mask: Tensor) -> Tensor:
    """Mean RGB [..., 3] of images [..., H, W, 3] over their masks [..., H, W] (NaN if empty)."""
    pixels = hard_mask(mask)
    count = pixels.sum(dim=(-2, -1)).float()[..., None]
    total = (rgb * pixels[..., None]).sum(dim=(-3, -2))
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, float("nan")))


def classify_colour(rgb: Tensor, mask: Tensor, references: Tensor) -> Tensor:
    """Index [B] of the reference colour nearest (L2) to each image's mean foreground colour.

    Args:
        rgb: [B, H, W, 3] images.
        mask: [B, H, W] their foreground.
        references: [B, K, 3] candidate mean colours per image, or [K, 3] shared by all.

    Returns:
        [B] long, `UNCLASSIFIED` where the mask is empty.
    """
    colour = mean_colour(rgb, mask)  # [B, 3]
    references = references.expand(colour.shape[0], *references.shape[-2:])
    distance = (references - colour[:, None]).norm(dim=-1)  # [B, K]
    best = distance.nan_to_num(float("inf")).argmin(dim=-1)
    return torch.where(colour.isnan().any(dim=-1), torch.full_like(best, UNCLASSIFIED), best)


def candidate_distances(images: Tensor, candidates: Sequence[Tensor]) -> Tensor:
    """[B, K] RGB L2 distance from each image [B, H, W, 3] in [0, 1] to the nearest view of each
    candidate (K tensors [V_k, H, W, 3], floats in [0, 1] or uint8).

    Shape judging passes one candidate per object (its renders in the prompted colour from views
    covering the camera distribution). Comparing shaded RGB rather than masks separates what
    silhouettes cannot (a cube's flat faces from a cylinder's, a mug's inside).
    """
    distances = torch.empty(images.shape[0], len(candidates))
    for k, views in enumerate(candidates):
        views = views.float() / 255.0 if views.dtype == torch.uint8 else views.float()
        # One image at a time bounds memory at V_k images.
        distances[:, k] = torch.stack([(views - image).flatten(1).norm(dim=1).amin() for image in images.float()])
    return distances
