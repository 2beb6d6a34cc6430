"""Sampling a point-cloud prior and judging its clouds against the procedural world's surfaces.

Every caption "a {colour} {object}" is sampled, and each sample is compared with fresh true
surface samples ("references", one cloud per object, drawn from the evaluation's seed):
- Chamfer: the symmetric Chamfer distance to the prompted object's reference, the mean of the two
  directions' mean plain (not squared) nearest-neighbour distances, so it reads as a length in
  the unit sphere ("the points are on average 0.03 off"); squared distances would let a few
  stray points dominate and read in area units;
- right object: the prompted object's reference is the nearest (by that Chamfer distance, on xyz
  only) among the references of every evaluated object; the geometry does not depend on the
  colour, so "among the objects in the prompted colour" and "among the objects" are one test;
- colour: the sample's mean rgb is nearest (L2) to the prompted colour's entry among the COLOURS
  table, each entry first shifted the way the prompted object's fixed-colour parts (a door, a
  carrot nose) shift its mean surface colour (for one-part objects the table itself).

Ground-truth clouds of as many points as a sample score about 0.03 Chamfer and every object
right (the oracle of tests/bundled/test_point_cloud_prior.py): the floor a perfect prior reaches,
set by the sampling density, not 0.

The sampler is a plain callable, so the scorer can be checked on ground-truth clouds.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor
from tqdm import tqdm

from bundled.world.objects import COLOURS, OBJECTS, caption
from bundled.world.point_clouds import surface_points

PointCloudSampler = Callable[[list[str]], tuple[Tensor, Tensor]]  # prompts -> xyz, rgb [B, N, 3]


def chamfer_distance(a: Tensor, b: Tensor) -> Tensor:
    """Symmetric Chamfer distance [B] between clouds a [B, N, 3] and b [B, M, 3]: the mean of the
    two directions' mean nearest-neighbour (plain Euclidean) distances."""
    distances = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")  # exact near 0
    return 0.5 * (distances.min(dim=2).values.mean(dim=1) + distances.min(dim=1).values.mean(dim=1))


def _surface_colour_means(name: str, reference: Tensor) -> Tensor:
    """[K, 3] the mean surface colour of an object in each colour of the COLOURS table, from the
    parts its reference points [M, 3] lie on."""
    obj = OBJECTS[name]
    _, part = obj.evaluate(reference)
    return torch.stack([obj.part_colours(colour)[part].mean(dim=0) for colour in COLOURS])


def _check_names(kind: str, names: Sequence[str], known: dict) -> None:
    unknown = [n for n in names if n not in known]
    repeated = sorted({n for n in names if list(names).count(n) > 1})
    if unknown or repeated or not names:
        raise ValueError(f"{kind}={list(names)!r}: unknown {unknown}, repeated {repeated}; give distinct names among {sorted(known)}")


def evaluate_point_cloud_prior(
    sample: PointCloudSampler,
    objects: Sequence[str] = tuple(OBJECTS),
    colours: Sequence[str] = tuple(COLOURS),
    samples_per_prompt: int = 1,
    reference_points: int = 2048,
    seed: int = 0,
) -> dict:
    """Sample every caption `samples_per_prompt` times and score the clouds.

    Args:
        sample: draws one cloud per prompt: xyz, rgb [B, N, 3] (rgb in [0, 1]).
        objects, colours: the part of the world to cover; the right object is judged among
            `objects` only.
        samples_per_prompt: more samples, tighter shares.
        reference_points: points of each object's true surface cloud.
        seed: seeds the references.

    Returns:
        {"summary": {"chamfer_mean", "right_object_share", "colour_share", "n_samples", ...},
         "per_caption": {caption: {"chamfer", "right_object_share", "colour_share"}}}.
    """
    _check_names("objects", objects, OBJECTS)
    _check_names("colours", colours, COLOURS)
    if samples_per_prompt < 1 or reference_points < 1:
        raise ValueError(f"samples_per_prompt={samples_per_prompt} and reference_points={reference_points} must be at least 1")
    pairs = [(c, o) for o in objects for c in colours] * samples_per_prompt
    captions = [caption(c, o) for c, o in pairs]
    xyz, rgb = sample(captions)
    if xyz.ndim != 3 or xyz.shape[0] != len(pairs) or xyz.shape[-1] != 3 or rgb.shape != xyz.shape:
        raise ValueError(f"the sampler returned xyz {tuple(xyz.shape)} and rgb {tuple(rgb.shape)} for {len(pairs)} prompts")
    if not (torch.isfinite(xyz).all() and torch.isfinite(rgb).all()):
        raise ValueError("the sampler returned non-finite points")

    generator = torch.Generator().manual_seed(seed)
    # Geometry only: the colour given to `surface_points` does not move the points.
    references = torch.stack([surface_points(OBJECTS[name], colours[0], reference_points, generator)[0] for name in objects])
    colour_means = torch.stack([_surface_colour_means(name, reference) for name, reference in zip(objects, references)])

    distances = torch.empty(len(pairs), len(objects))
    for o in tqdm(range(len(objects)), desc="scoring point clouds", unit="object", leave=False):
        distances[:, o] = torch.cat([chamfer_distance(chunk, references[o].expand(chunk.shape[0], -1, -1)) for chunk in xyz.split(16)])
    prompted = torch.tensor([list(objects).index(o) for _, o in pairs])
    chamfer = distances.gather(1, prompted[:, None])[:, 0]
    right_object = distances.argmin(dim=1) == prompted
    table = list(COLOURS)
    colour_ok = (rgb.mean(dim=1)[:, None] - colour_means[prompted]).norm(dim=-1).argmin(dim=1) == torch.tensor([table.index(c) for c, _ in pairs])

    per_caption = {}
    for text in dict.fromkeys(captions):
        rows = torch.tensor([c == text for c in captions])
        per_caption[text] = {
            "chamfer": float(chamfer[rows].mean()),
            "right_object_share": float(right_object[rows].float().mean()),
            "colour_share": float(colour_ok[rows].float().mean()),
        }
    summary = {
        "chamfer_mean": float(chamfer.mean()),
        "right_object_share": float(right_object.float().mean()),
        "colour_share": float(colour_ok.float().mean()),
        "right_object_correct": int(right_object.sum()),
        "colour_correct": int(colour_ok.sum()),
        "n_samples": len(pairs),
        "points_per_sample": int(xyz.shape[1]),
        "reference_points": reference_points,
    }
    return {"summary": summary, "per_caption": per_caption}
