"""Judging a multi-view prior by its view sets: are all four views of a sampled set the prompted
object, in the prompted colour, seen from where their cameras are?

For every colour/object prompt ("a red mug"), view sets are sampled the way the multi-view SDS
renders them (4 cameras 90 degrees apart at a random elevation of the SDS distribution). Each view
is scored like a text prior's sample (`bundled.evaluation.prior`: colour against the object's mean
colours, shape against the reference views); views of objects with a front that look from within
45 degrees of the front or the back are also given to the front/back judge, against their camera.
A set counts as right in colour (shape, view) when all its (judged) views are.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from bundled.evaluation.prior import PriorPrompt, build_references, compare_size, score_plain
from bundled.evaluation.view_classifier import FrontBackClassifier
from bundled.prior.multi_view_model import NUM_VIEWS
from bundled.prior.sampling import LoadedPrior, sample_images
from bundled.world.objects import COLOURS, OBJECTS
from framework.cameras.camera import CameraBatch
from framework.cameras.distribution import OrbitDistribution
from framework.guidance.camera_condition import camera_condition
from framework.guidance.multi_view_attention import set_multi_view_attention
from framework.guidance.prompts import VIEWS, view_captions

SECTOR_HALF_WIDTH_DEG = 45.0


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


def evaluate_multi_view_prior(
    prior: LoadedPrior,
    objects: Sequence[str] = tuple(OBJECTS),
    colours: Sequence[str] = tuple(COLOURS),
    sets_per_prompt: int = 1,
    seed: int = 0,
    steps: int = 50,
    guidance_scale: float = 2.0,
    view_dependent_prompts: bool = False,
) -> dict:
    """Sample `sets_per_prompt` view sets of every prompt and score them (see the module). With
    `view_dependent_prompts` each view's caption also names the view its camera sees (", back
    view"), as the text prior was trained and as `guidance.view_dependent=true` conditions."""
    generator = torch.Generator().manual_seed(seed)
    prompts = [PriorPrompt(c, o) for o in objects for c in colours for _ in range(sets_per_prompt)]
    cameras = OrbitDistribution().sample_groups(len(prompts), NUM_VIEWS, prior.resolution, generator)
    view_prompts = [p for p in prompts for _ in range(NUM_VIEWS)]
    set_multi_view_attention(prior.unet, NUM_VIEWS)
    texts = [p.text for p in view_prompts]
    if view_dependent_prompts:
        texts = view_captions(texts, cameras.elevation_deg, cameras.azimuth_deg)
    images = sample_images(prior, texts, generator, steps=steps, guidance_scale=guidance_scale, batch_size=4 * NUM_VIEWS, cameras=camera_condition(cameras))
    scores = score_view_sets(images, view_prompts, cameras)
    per_set = {key: scores[key].view(-1, NUM_VIEWS).all(dim=1) for key in ("colour", "shape", "view")}
    judged_sets = scores["judged"].view(-1, NUM_VIEWS).any(dim=1)
    summary = {
        "set_colour_accuracy": float(per_set["colour"].float().mean()),
        "set_shape_accuracy": float(per_set["shape"].float().mean()),
        "set_view_accuracy": float(per_set["view"][judged_sets].float().mean()) if judged_sets.any() else None,
        "view_colour_accuracy": float(scores["colour"].float().mean()),
        "view_shape_accuracy": float(scores["shape"].float().mean()),
        "view_view_accuracy": float(scores["view"][scores["judged"]].float().mean()) if scores["judged"].any() else None,
        "n_sets": len(prompts),
        "n_judged_sets": int(judged_sets.sum()),
    }
    return {"summary": summary, "images": images, "prompts": [p.text for p in prompts]}
