"""Judging a text-to-image prior of the bundled world by what its samples show.

Every sample is compared with ground-truth renders of the world ("references": each object in
each colour from a grid of views covering the SDS camera distribution, at 32 px):
- colour: the sample's mean foreground colour is nearest (L2) to the prompted colour among the
  reference means of that object in every colour (per object, so fixed-colour details such as
  a door shift every candidate alike);
- shape: no other object has a reference view (RGB L2) in the prompted colour nearer than the
  prompted object's nearest (a tie counts for the prompt: unlit, in RichDreamer's albedo domain,
  hundreds of a cylinder's reference views and a mug's with its handle hidden are the same
  images, and shaded, in the darker colours, dozens);
- view (objects with a front only): a "..., front view" sample is classed as showing the front
  (azimuth within 45 degrees of 0) rather than the back (within 45 of 180), and vice versa for
  "back view", by a small CNN trained on the front and back references
  (`bundled.evaluation.view_classifier`, which says why not the nearest reference);
- normal-map shape: a "a normal map of a {colour} {object}" sample (the words Fantasia3D's
  geometry slot makes of a prompt) is nearer (L2) to a normal-map reference view of the prompted
  object than to any other object's (ties count for the prompt, as for shape).

Scored this way, ground-truth renders from random cameras of the SDS distribution reach about
100 % colour, 95-97 % shape and 97 % view accuracy (the shipped judge: mug 100, house 100,
snowman 91 % of 64 front and back views each; `scripts/train_view_classifier.py` measures it): the
ceiling a perfect prior can reach. Some views are ambiguous (a mug whose handle is hidden is a
scaled cylinder). Silhouette IoU alone reached only 85-88 % shape accuracy, hence the shaded
comparison.

The sampler is a plain callable, so the scorer can be checked on ground-truth renders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from bundled.evaluation.metrics import candidate_distances, classify_colour, foreground_mask, mean_colour
from bundled.evaluation.view_classifier import TRAIN_STEPS, FrontBackClassifier, train_front_back_classifier
from bundled.world.objects import COLOURS, OBJECTS, caption, normal_map_caption
from bundled.world.render import render_normal_map, render_object
from framework.cameras.camera import CameraBatch
from framework.guidance.prompts import VIEWS, view_dependent_prompt

COMPARE_RESOLUTION = 32  # small shifts and noise matter less; a door or a nose still shows
VIEW_HALF_WIDTH_DEG = 45.0  # the front/back sectors of `framework.guidance.prompts.ViewThresholds`

Sampler = Callable[[list[str]], Tensor]  # prompts -> images [B, H, W, 3] in [0, 1]


@dataclass(frozen=True)
class PriorPrompt:
    """One prompt of the world: a colour, an object and optionally a view ("front" or "back")."""

    colour: str
    object: str
    view: str | None = None
    normal_map: bool = False

    @property
    def text(self) -> str:
        plain = normal_map_caption(self.object, self.colour) if self.normal_map else caption(self.colour, self.object)
        return plain if self.view is None else view_dependent_prompt(plain, self.view)


def world_prompts(objects: Sequence[str], colours: Sequence[str]) -> list[PriorPrompt]:
    """Every "a {colour} {object}" prompt, objects outermost."""
    return [PriorPrompt(c, o) for o in objects for c in colours]


def view_prompts(objects: Sequence[str], colours: Sequence[str]) -> list[PriorPrompt]:
    """"..., front view" and "..., back view" prompts of the objects that have a front."""
    return [PriorPrompt(c, o, v) for o in objects if OBJECTS[o].has_front for v in ("front", "back") for c in colours]


def normal_map_prompts(objects: Sequence[str], colours: Sequence[str]) -> list[PriorPrompt]:
    """Every "a normal map of a {colour} {object}" prompt, objects outermost."""
    return [PriorPrompt(c, o, normal_map=True) for o in objects for c in colours]


@dataclass(frozen=True)
class ReferenceGrid:
    """The reference views: every (distance, elevation, azimuth) combination, fovy fixed.

    The defaults span `OrbitDistribution()`: elevations -10..75, the full azimuth circle in
    22.5 degree steps (so the front and back sectors hold 5 views each), and distances whose
    image scales cover its distance and field-of-view ranges.
    """

    elevations_deg: tuple[float, ...] = (-10.0, 7.0, 24.0, 41.0, 58.0, 75.0)
    n_azimuths: int = 16
    distances: tuple[float, ...] = (2.5, 2.8, 3.15)
    fovy_deg: float = 42.5

    def cameras(self, resolution: int) -> CameraBatch:
        azimuths = [i * 360.0 / self.n_azimuths for i in range(self.n_azimuths)]
        grid = torch.tensor([[d, e, a] for d in self.distances for e in self.elevations_deg for a in azimuths])
        azimuth = (grid[:, 2] + 180.0) % 360.0 - 180.0
        n = grid.shape[0]
        return CameraBatch.from_orbit(grid[:, 1], azimuth, grid[:, 0], torch.full((n,), self.fovy_deg), resolution)


@dataclass
class PriorReferences:
    """Ground truth the scores compare with, for `objects` x `colours`.

    Attributes:
        images: [K_o, K_c, V, h, w, 3] uint8 renders from the grid's V views at h = w =
            COMPARE_RESOLUTION.
        azimuth_deg: [V] the views' azimuths in [-180, 180).
        colour_means: [K_o, K_c, 3] mean foreground colour of each object in each colour, over
            all views.
    """

    objects: tuple[str, ...]
    colours: tuple[str, ...]
    images: Tensor
    azimuth_deg: Tensor
    colour_means: Tensor

    @property
    def front_views(self) -> Tensor:
        """[V] bool: views in the front sector."""
        return self.azimuth_deg.abs() <= VIEW_HALF_WIDTH_DEG

    @property
    def back_views(self) -> Tensor:
        """[V] bool: views in the back sector."""
        return self.azimuth_deg.abs() >= 180.0 - VIEW_HALF_WIDTH_DEG


def build_references(
    objects: Sequence[str], colours: Sequence[str], grid: ReferenceGrid = ReferenceGrid(), albedo: bool = False
) -> PriorReferences:
    """Render every object in every colour from every grid view (the default grid takes about
    half a minute for the whole world on one CPU core); with `albedo`, unlit (RichDreamer's albedo
    domain), so an albedo sample is judged against albedo."""
    for name in objects:
        if name not in OBJECTS:
            raise ValueError(f"object {name!r} is not in the bundled world {sorted(OBJECTS)}")
    for name in colours:
        if name not in COLOURS:
            raise ValueError(f"colour {name!r} is not in the bundled world {sorted(COLOURS)}")
    cameras = grid.cameras(COMPARE_RESOLUTION)
    size = COMPARE_RESOLUTION
    images = torch.empty(len(objects), len(colours), cameras.batch_size, size, size, 3, dtype=torch.uint8)
    colour_means = torch.empty(len(objects), len(colours), 3)
    with tqdm(total=len(objects) * len(colours), desc="rendering references", unit="object", leave=False) as bar:
        for o, name in enumerate(objects):
            for c, colour in enumerate(colours):
                # One sample per pixel: the references are many, and 32 px blurs the edges anyway.
                rgb, _ = render_object(OBJECTS[name], colour, cameras, supersample=1, lit=not albedo)
                images[o, c] = (rgb * 255.0).round().to(torch.uint8)
                colour_means[o, c] = mean_colour(rgb, foreground_mask(rgb)).nanmean(dim=0)
                bar.update(1)
    return PriorReferences(tuple(objects), tuple(colours), images, cameras.azimuth_deg, colour_means)


def build_normal_map_references(objects: Sequence[str], grid: ReferenceGrid = ReferenceGrid()) -> Tensor:
    """[K_o, V, h, w, 3] uint8 normal maps of every object from every grid view (no colour)."""
    cameras = grid.cameras(COMPARE_RESOLUTION)
    images = [render_normal_map(OBJECTS[name], cameras, supersample=1)[0] for name in objects]
    return (torch.stack(images) * 255.0).round().to(torch.uint8)


def compare_size(images: Tensor) -> Tensor:
    """Images [B, H, W, 3] area-resampled to the references' resolution."""
    if images.shape[1:3] == (COMPARE_RESOLUTION, COMPARE_RESOLUTION):
        return images
    small = F.interpolate(images.permute(0, 3, 1, 2), size=(COMPARE_RESOLUTION,) * 2, mode="area")
    return small.permute(0, 2, 3, 1)


def score_plain(images: Tensor, prompts: Sequence[PriorPrompt], references: PriorReferences) -> tuple[Tensor, Tensor]:
    """Colour and shape correctness [N] (bool) of samples [N, H, W, 3] of plain prompts."""
    objects = torch.tensor([references.objects.index(p.object) for p in prompts])
    colours = torch.tensor([references.colours.index(p.colour) for p in prompts])
    colour_ok = classify_colour(images, foreground_mask(images), references.colour_means[objects]) == colours
    small = compare_size(images)
    shape_ok = torch.zeros(len(prompts), dtype=torch.bool)
    for c in colours.unique().tolist():
        rows = (colours == c).nonzero(as_tuple=True)[0]
        shape_ok[rows] = prompted_is_nearest(small[rows], list(references.images[:, c]), objects[rows])
    return colour_ok, shape_ok


def prompted_is_nearest(images: Tensor, candidates: Sequence[Tensor], wanted: Tensor) -> Tensor:
    """[B] bool: no candidate has a view nearer (RGB L2) to each image than candidate `wanted`
    [B] does; a tie counts for `wanted` (unlit, or as normal maps, a cylinder and a mug whose
    handle is hidden have the same reference images)."""
    distances = candidate_distances(images, candidates)
    return distances.gather(1, wanted[:, None])[:, 0] <= distances.amin(dim=1)


def score_normal_maps(images: Tensor, prompts: Sequence[PriorPrompt], objects: Sequence[str], references: Tensor) -> Tensor:
    """Shape correctness [N] (bool) of normal-map samples [N, H, W, 3]: the nearest normal-map
    reference view shows the prompted object (`references` from `build_normal_map_references`)."""
    wanted = torch.tensor([list(objects).index(p.object) for p in prompts])
    return prompted_is_nearest(compare_size(images), list(references), wanted)


def train_view_classifier(references: PriorReferences, steps: int = TRAIN_STEPS, seed: int = 0, members: int = 1) -> FrontBackClassifier:
    """The front/back classifier of the references' objects that have a front, trained on their
    front and back reference views in every colour."""
    names = [name for name in references.objects if OBJECTS[name].has_front]
    if not names:
        raise ValueError(f"none of the objects {list(references.objects)} has a front")
    rows = [references.objects.index(name) for name in names]
    front = [references.images[o][:, references.front_views].flatten(0, 1) for o in rows]
    back = [references.images[o][:, references.back_views].flatten(0, 1) for o in rows]
    return train_front_back_classifier(front, back, names, steps=steps, seed=seed, members=members)


def score_views(images: Tensor, prompts: Sequence[PriorPrompt], classifier: FrontBackClassifier) -> Tensor:
    """View correctness [N] (bool) of samples [N, H, W, 3] of "front view"/"back view" prompts."""
    views = torch.tensor([VIEWS.index(p.view) for p in prompts])
    return classifier.classify(compare_size(images), [p.object for p in prompts]) == views


@dataclass
class PriorEvaluation:
    """Scores and samples of one evaluation.

    Attributes:
        summary: accuracies (None where nothing was scored) and counts.
        per_object: per object, its colour and shape (and view) accuracies.
        grid: [K_o, K_c, H, W, 3] the first sample of every plain prompt.
        view_grid: [2 * K_f, K_c, H, W, 3] the first front and back samples of the K_f objects
            with a front (rows: object 1 front, object 1 back, ...), or None.
        normal_map_grid: [K_o, K_c, H, W, 3] the first normal-map sample of every object and
            colour word, or None.
    """

    summary: dict
    per_object: dict
    grid: Tensor
    view_grid: Tensor | None
    normal_map_grid: Tensor | None = None


def _accuracy(correct: Tensor) -> float | None:
    return float(correct.float().mean()) if correct.numel() else None


def evaluate_prior(
    sample: Sampler,
    objects: Sequence[str] = tuple(OBJECTS),
    colours: Sequence[str] = tuple(COLOURS),
    samples_per_prompt: int = 1,
    with_views: bool = True,
    grid: ReferenceGrid = ReferenceGrid(),
    view_classifier: FrontBackClassifier | None = None,
    with_normal_maps: bool = False,
) -> PriorEvaluation:
    """Sample every prompt `samples_per_prompt` times and score the samples.

    Args:
        sample: draws one image per prompt, as a batch [B, H, W, 3] in [0, 1].
        objects, colours: the part of the world to cover.
        samples_per_prompt: more samples, tighter accuracies.
        with_views: also score "front view" / "back view" prompts of objects with a front.
        grid: the reference views.
        view_classifier: the front/back judge (None: the shipped one).
        with_normal_maps: also score "a normal map of a {colour} {object}" prompts.
    """
    if samples_per_prompt < 1:
        raise ValueError(f"samples_per_prompt={samples_per_prompt} must be at least 1")
    for kind, names, known in (("objects", objects, OBJECTS), ("colours", colours, COLOURS)):
        unknown = [n for n in names if n not in known]
        repeated = sorted({n for n in names if list(names).count(n) > 1})
        if unknown or repeated or not names:
            raise ValueError(f"{kind}={list(names)!r}: unknown {unknown}, repeated {repeated}; give distinct names among {sorted(known)}")
    plain = world_prompts(objects, colours) * samples_per_prompt
    viewed = view_prompts(objects, colours) * samples_per_prompt if with_views else []
    normal = normal_map_prompts(objects, colours) * samples_per_prompt if with_normal_maps else []
    images = sample([p.text for p in plain + viewed + normal])
    if images.ndim != 4 or images.shape[0] != len(plain) + len(viewed) + len(normal) or images.shape[-1] != 3:
        raise ValueError(f"the sampler returned shape {tuple(images.shape)} for {len(plain) + len(viewed) + len(normal)} prompts")
    plain_images, view_images = images[: len(plain)], images[len(plain) : len(plain) + len(viewed)]
    normal_images = images[len(plain) + len(viewed) :]
    references = build_references(objects, colours, grid)
    colour_ok, shape_ok = score_plain(plain_images, plain, references)
    if viewed:
        view_ok = score_views(view_images, viewed, view_classifier or FrontBackClassifier.load())
    else:
        view_ok = torch.zeros(0, dtype=torch.bool)
    if normal:
        normal_ok = score_normal_maps(normal_images, normal, objects, build_normal_map_references(objects, grid))
    else:
        normal_ok = torch.zeros(0, dtype=torch.bool)

    summary = {
        "color_accuracy": _accuracy(colour_ok),
        "shape_accuracy": _accuracy(shape_ok),
        "view_accuracy": _accuracy(view_ok),
        "normal_map_shape_accuracy": _accuracy(normal_ok),
        "color_correct": int(colour_ok.sum()),
        "shape_correct": int(shape_ok.sum()),
        "view_correct": int(view_ok.sum()),
        "normal_map_shape_correct": int(normal_ok.sum()),
        "n_samples": len(plain),
        "n_view_samples": len(viewed),
        "n_normal_map_samples": len(normal),
    }
    per_object = {}
    for name in objects:
        rows = torch.tensor([p.object == name for p in plain])
        entry = {"color_accuracy": _accuracy(colour_ok[rows]), "shape_accuracy": _accuracy(shape_ok[rows])}
        if viewed and OBJECTS[name].has_front:
            entry["view_accuracy"] = _accuracy(view_ok[torch.tensor([p.object == name for p in viewed])])
        if normal:
            entry["normal_map_shape_accuracy"] = _accuracy(normal_ok[torch.tensor([p.object == name for p in normal])])
        per_object[name] = entry

    size = images.shape[1:]
    sample_grid = plain_images[: len(objects) * len(colours)].reshape(len(objects), len(colours), *size)
    view_grid = view_images[: len(viewed) // samples_per_prompt].reshape(-1, len(colours), *size) if viewed else None
    normal_grid = normal_images[: len(normal) // samples_per_prompt].reshape(len(objects), len(colours), *size) if normal else None
    return PriorEvaluation(summary, per_object, sample_grid, view_grid, normal_grid)
