"""Judging a novel-view prior by its samples: does it draw the held-out object, in its colour, where
a camera moved by a given relative pose would see it?

For every held-out colour/object pair (never shown in training), input views are rendered from
the front camera image-to-3D uses (elevation 15, azimuth 0) and from random cameras of the SDS
distribution. From each, the prior samples the 8 evaluation views turned by the input's azimuth
(so the relative poses are the same for every input: 4 at 15 degrees, 4 at 50), through the
guidance class SDS uses (`NovelViewGuidance` + `denoise` from pure noise). Each sample is scored
against the true render of that camera:
- mask IoU of its foreground (non-white pixels) against the true coverage;
- colour: its mean foreground colour is nearest to the held-out colour among the object's mean
  colours in every colour of the world, rendered from that camera.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm import tqdm

from bundled.evaluation.metrics import classify_colour, foreground_mask, hard_mask, mask_iou, mean_colour
from bundled.evaluation.views import evaluation_cameras
from bundled.prior.view_pairs import HELD_OUT
from bundled.world.objects import COLOURS, OBJECTS
from bundled.world.render import render_object
from framework.cameras.batch import ReferenceView
from framework.cameras.camera import CameraBatch
from framework.cameras.distribution import OrbitDistribution
from framework.guidance.condition import Condition
from framework.guidance.denoising import denoise
from framework.guidance.novel_view import NovelViewGuidance

TARGET_VIEWS = 8
FRONT_INPUT = (15.0, 0.0)  # elevation, azimuth of `scripts/ground_truth.py`'s view_00


@dataclass
class NovelViewScore:
    colour: str
    object: str
    input_elevation_deg: float
    input_azimuth_deg: float
    mask_iou: list[float]  # per target view
    colour_right: list[bool]


def input_cameras(n_random: int, resolution: int, generator: torch.Generator) -> CameraBatch:
    """The front camera, then `n_random` cameras of the SDS distribution."""
    front = CameraBatch.from_orbit(torch.tensor([FRONT_INPUT[0]]), torch.tensor([FRONT_INPUT[1]]), torch.tensor([2.8]), torch.tensor([42.0]), resolution)
    if n_random == 0:
        return front
    return CameraBatch.cat([front, OrbitDistribution().sample(n_random, resolution, generator)])


def target_cameras(input_camera: CameraBatch, resolution: int) -> CameraBatch:
    """The evaluation views turned by the input camera's azimuth."""
    ring = evaluation_cameras(TARGET_VIEWS, resolution)
    azimuth = (ring.azimuth_deg + input_camera.azimuth_deg[0] + 180.0) % 360.0 - 180.0
    return CameraBatch.from_orbit(ring.elevation_deg, azimuth, ring.distance, ring.fovy_deg, resolution)


def score_novel_view_prior(
    guidance: NovelViewGuidance,
    n_random_inputs: int = 1,
    steps: int = 30,
    guidance_scale: float = 3.0,
    seed: int = 0,
    pairs: tuple[tuple[str, str], ...] = HELD_OUT,
    rows: list[Tensor] | None = None,
) -> list[NovelViewScore]:
    """Scores of every (pair, input view); the sampling noise comes from the guidance's generator,
    seeded here, so a seed gives one result. `rows`, when given, receives per score the images
    [17, H, W, 3]: the input view, the 8 samples, the 8 true renders."""
    resolution = guidance.resolution
    generator = torch.Generator().manual_seed(seed)
    guidance.generator.manual_seed(seed)
    inputs = input_cameras(n_random_inputs, resolution, generator)
    scores = []
    for colour, name in tqdm(pairs, desc="scoring novel-view prior", unit="pair"):
        obj = OBJECTS[name]
        for i in range(inputs.batch_size):
            camera = inputs.subset(slice(i, i + 1))
            image, coverage = render_object(obj, colour, camera)
            mask = hard_mask(coverage)[..., None].float()
            reference = ReferenceView(image, mask, camera)
            targets = target_cameras(camera, resolution)
            samples = denoise(guidance, torch.ones(TARGET_VIEWS, resolution, resolution, 3), Condition(targets, None, reference), 1.0, steps, guidance_scale)
            truth, truth_coverage = render_object(obj, colour, targets)
            scores.append(_score(samples, truth_coverage, targets, colour, name, camera))
            if rows is not None:
                rows.append(torch.cat([image, samples, truth]))
    return scores


def _score(samples: Tensor, truth_coverage: Tensor, targets: CameraBatch, colour: str, name: str, camera: CameraBatch) -> NovelViewScore:
    sample_mask = foreground_mask(samples)
    # The object's mean colour in every colour of the world, from these cameras: [V, K, 3].
    references = torch.stack([mean_colour(*render_object(OBJECTS[name], other, targets)) for other in COLOURS], dim=1)
    predicted = classify_colour(samples, sample_mask, references)
    return NovelViewScore(
        colour,
        name,
        float(camera.elevation_deg[0]),
        float(camera.azimuth_deg[0]),
        mask_iou(sample_mask, truth_coverage).tolist(),
        (predicted == list(COLOURS).index(colour)).tolist(),
    )


def summarise(scores: list[NovelViewScore]) -> dict[str, float]:
    """Mean mask IoU and the share of samples with the right colour, over every sample."""
    ious = [v for s in scores for v in s.mask_iou]
    right = [v for s in scores for v in s.colour_right]
    return {"mask_iou": sum(ious) / len(ious), "colour_accuracy": sum(right) / len(right), "samples": float(len(ious))}
