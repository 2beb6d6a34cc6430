"""Judging a multi-view prior by its view sets: are all four views of a sampled set the prompted
object, in the prompted colour, seen from where their cameras are?

For every colour/object prompt ("a red mug"), view sets are sampled the way the multi-view SDS
renders them (4 cameras 90 degrees apart at a random elevation of the SDS distribution). Each view
is scored like a text prior's sample (`bundled.evaluation.prior`: colour against the object's mean
colours, shape against the reference views); views of objects with a front that look from within
45 degrees of the front or the back are also given to the front/back judge, against their camera.
A set counts as right in colour (shape, view) when all its (judged) views are.

RichDreamer's domains are judged the same way on what they show: a normal-depth view's shape by
its normal map against the normal-map references (`score_normal_maps`), and whether its depth map
covers what its normal map covers (mask IoU >= 0.8: the depth channel draws the same object); an
albedo view's colour and shape against unlit references. The front/back judge knows shaded
colour renders only, so views are judged in the colour domain alone.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from bundled.evaluation.metrics import mask_iou
from bundled.evaluation.prior import PriorPrompt, build_normal_map_references, build_references, compare_size, score_normal_maps, score_plain
from bundled.evaluation.view_classifier import FrontBackClassifier
from bundled.prior.multi_view_model import DOMAIN_PRIOR_DIRS, NUM_VIEWS
from bundled.prior.sampling import LoadedPrior, sample_images
from bundled.world.objects import COLOURS, OBJECTS
from framework.cameras.camera import CameraBatch
from framework.cameras.distribution import OrbitDistribution
from framework.guidance.camera_condition import camera_condition
from framework.guidance.multi_view_attention import set_multi_view_attention
from framework.guidance.prompts import VIEWS, view_captions

SECTOR_HALF_WIDTH_DEG = 45.0
DEPTH_AGREEMENT_IOU = 0.8


def judged_sides(cameras: CameraBatch) -> Tensor:
    """[B] VIEWS.index("front") / ("back") for cameras within 45 degrees of the front / back, -1
    for the rest (side views, which the judge cannot call)."""
    azimuth = (cameras.azimuth_deg + 180.0) % 360.0 - 180.0
    sides = torch.full_like(azimuth, -1, dtype=torch.long)
    sides[azimuth.abs() < SECTOR_HALF_WIDTH_DEG] = VIEWS.index("front")
    sides[azimuth.abs() > 180.0 - SECTOR_HALF_WIDTH_DEG] = VIEWS.index("back")
    return sides


def score_view_sets(images: Tensor, prompts: Sequence[PriorPrompt], cameras: CameraBatch, classifier: FrontBackClassifier | None = None) -> dict[str, Tensor]:
    """Per view [S * 4] bools: colour, shape, and view (True where not judged), plus `judged`."""
    objects = sorted({p.object for p in prompts})
    colours = sorted({p.colour for p in prompts})
    colour_ok, shape_ok = score_plain(images, prompts, build_references(objects, colours))
    sides = judged_sides(cameras)
    judged = (sides >= 0) & torch.tensor([OBJECTS[p.object].has_front for p in prompts])
    view_ok = torch.ones(len(prompts), dtype=torch.bool)
    if judged.any():
        rows = judged.nonzero(as_tuple=True)[0]
        judge = classifier or FrontBackClassifier.load()
        view_ok[rows] = judge.classify(compare_size(images[rows]), [prompts[int(i)].object for i in rows]) == sides[rows]
    return {"colour": colour_ok, "shape": shape_ok, "view": view_ok, "judged": judged}


def score_normal_depth_views(images: Tensor, prompts: Sequence[PriorPrompt]) -> dict[str, Tensor]:
    """Per view [S * 4] bools of normal-depth samples [S * 4, H, W, 4]: shape (the normal map's
    nearest normal-map reference is the prompted object) and depth (the depth map's foreground,
    > 0.1, overlaps the normal map's, not white, with IoU >= DEPTH_AGREEMENT_IOU)."""
    objects = sorted({p.object for p in prompts})
    normal_maps, depth = images[..., :3], images[..., 3]
    shape_ok = score_normal_maps(normal_maps, prompts, objects, build_normal_map_references(objects))
    drawn = (normal_maps < 0.9).any(dim=-1)
    return {"shape": shape_ok, "depth": mask_iou((depth > 0.1).float(), drawn.float()) >= DEPTH_AGREEMENT_IOU}


def evaluate_multi_view_prior(
    prior: LoadedPrior,
    objects: Sequence[str] = tuple(OBJECTS),
    colours: Sequence[str] = tuple(COLOURS),
    sets_per_prompt: int = 1,
    seed: int = 0,
    steps: int = 50,
    guidance_scale: float = 2.0,
    view_dependent_prompts: bool = False,
    domain: str = "colour",
) -> dict:
    """Sample `sets_per_prompt` view sets of every prompt and score them (see the module). With
    `view_dependent_prompts` each view's caption also names the view its camera sees (", back
    view"), as the text prior was trained and as `guidance.view_dependent=true` conditions.
    `domain`: what the prior draws, "colour", "normal_depth" or "albedo" (RichDreamer's)."""
    if domain not in DOMAIN_PRIOR_DIRS:
        raise ValueError(f"domain={domain!r}: must be one of {tuple(DOMAIN_PRIOR_DIRS)}")
    generator = torch.Generator().manual_seed(seed)
    prompts = [PriorPrompt(c, o) for o in objects for c in colours for _ in range(sets_per_prompt)]
    cameras = OrbitDistribution().sample_groups(len(prompts), NUM_VIEWS, prior.resolution, generator)
    view_prompts = [p for p in prompts for _ in range(NUM_VIEWS)]
    set_multi_view_attention(prior.unet, NUM_VIEWS)
    texts = [p.text for p in view_prompts]
    if view_dependent_prompts:
        texts = view_captions(texts, cameras.elevation_deg, cameras.azimuth_deg)
    images = sample_images(prior, texts, generator, steps=steps, guidance_scale=guidance_scale, batch_size=4 * NUM_VIEWS, cameras=camera_condition(cameras))
    if domain == "normal_depth":
        summary = _accuracies(score_normal_depth_views(images, view_prompts))
    elif domain == "albedo":
        objects_, colours_ = sorted({p.object for p in view_prompts}), sorted({p.colour for p in view_prompts})
        colour_ok, shape_ok = score_plain(images, view_prompts, build_references(objects_, colours_, albedo=True))
        summary = _accuracies({"colour": colour_ok, "shape": shape_ok})
    else:
        scores = score_view_sets(images, view_prompts, cameras)
        judged = scores.pop("judged")
        summary = _accuracies(scores, {"view": judged})
        summary["n_judged_sets"] = int(judged.view(-1, NUM_VIEWS).any(dim=1).sum())
    summary = {"domain": domain, **summary, "n_sets": len(prompts)}
    return {"summary": summary, "images": images, "prompts": [p.text for p in prompts]}


def _accuracies(scores: dict[str, Tensor], judged: dict[str, Tensor] | None = None) -> dict[str, float | None]:
    """set_<key>_accuracy (every view of a set right) and view_<key>_accuracy for per-view bools
    [S * 4]; a key in `judged` counts only its judged views [S * 4] (and sets with one)."""
    summary: dict[str, float | None] = {}
    for key, correct in scores.items():
        counted = (judged or {}).get(key, torch.ones_like(correct))
        sets = counted.view(-1, NUM_VIEWS).any(dim=1)
        per_set = correct.view(-1, NUM_VIEWS).all(dim=1)
        summary[f"set_{key}_accuracy"] = float(per_set[sets].float().mean()) if sets.any() else None
        summary[f"view_{key}_accuracy"] = float(correct[counted].float().mean()) if counted.any() else None
    return summary
