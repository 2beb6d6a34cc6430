"""Training images of the bundled priors: procedural objects seen by the SDS camera distribution,
as shaded colour renders, as camera-space normal maps (Fantasia3D's geometry stage), as normal
maps with depth maps (4 channels: RichDreamer's normal-depth prior) or as unlit albedo renders
(RichDreamer's albedo prior)."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from multiprocessing import get_context

import torch
from torch import Tensor
from tqdm import tqdm

from bundled.world.objects import COLOURS, OBJECTS, caption, normal_map_caption
from bundled.world.render import render_normal_depth, render_normal_map, render_object
from framework.cameras.camera import CameraBatch
from framework.cameras.distribution import OrbitDistribution
from framework.guidance.prompts import VIEWS, view_dependent_prompt, view_index

COLOUR_NAMES = tuple(COLOURS)
OBJECT_NAMES = tuple(OBJECTS)
DOMAINS = ("colour", "normal_map", "normal_depth", "albedo")


def domain_channels(domain: str) -> int:
    """Image channels of a domain: 4 for normal-depth (normal map, then depth map), else 3."""
    if domain not in DOMAINS:
        raise ValueError(f"domain={domain!r}: must be one of {DOMAINS}")
    return 4 if domain == "normal_depth" else 3


@dataclass
class RenderedSet:
    images: Tensor  # [N, H, W, C] uint8 (C: `domain_channels`)
    colour: Tensor  # [N] index into COLOUR_NAMES
    object: Tensor  # [N] index into OBJECT_NAMES
    view: Tensor  # [N] index into VIEWS
    domain: Tensor | None = None  # [N] index into DOMAINS; None: all colour renders

    def __post_init__(self) -> None:
        if self.domain is None:
            self.domain = torch.zeros(len(self.colour), dtype=torch.long)

    @classmethod
    def cat(cls, sets: "list[RenderedSet]") -> "RenderedSet":
        return cls(*(torch.cat([getattr(s, name) for s in sets]) for name in ("images", "colour", "object", "view", "domain")))

    def __len__(self) -> int:
        return self.images.shape[0]


def render_set(size: int, resolution: int, seed: int, chunk: int = 64, workers: int = 1, domain: str = "colour") -> RenderedSet:
    """`size` renders with colour and object drawn uniformly and cameras from the SDS sampler's
    default distribution, deterministic in `seed` (the same for any number of `workers`: every
    random draw happens here, the worker processes only render). `domain="normal_map"` draws the
    same things but renders normal maps (the colour is then only a word of some captions); so do
    "normal_depth" and "albedo" in their domains."""
    if size <= 0 or workers <= 0:
        raise ValueError(f"size={size} and workers={workers} must be positive")
    domain_channels(domain)
    generator = torch.Generator().manual_seed(seed)
    distribution = OrbitDistribution()
    colour = torch.randint(len(COLOUR_NAMES), (size,), generator=generator)
    obj = torch.randint(len(OBJECT_NAMES), (size,), generator=generator)
    cameras = [distribution.sample(min(size, a + chunk) - a, resolution, generator) for a in range(0, size, chunk)]
    images, views = render_rows(obj, colour, cameras, workers, domain)
    return RenderedSet(images, colour, obj, views, torch.full((size,), DOMAINS.index(domain)))


def render_rows(obj: Tensor, colour: Tensor, cameras: list[CameraBatch], workers: int = 1, domain: str = "colour") -> tuple[Tensor, Tensor]:
    """uint8 renders [N, H, W, C] and view indices [N] of objects `obj` [N] in colours `colour`
    [N] (indices into OBJECT_NAMES, COLOUR_NAMES) seen by `cameras`, chunks of consecutive rows
    (one chunk per task of `workers` processes)."""
    sizes = [c.batch_size for c in cameras]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    chunks = [(obj[a : a + n], colour[a : a + n], c, domain) for a, n, c in zip(starts, sizes, cameras)]
    resolution = cameras[0].height
    images = torch.empty(len(obj), resolution, resolution, domain_channels(domain), dtype=torch.uint8)
    views = torch.empty(len(obj), dtype=torch.long)
    with ExitStack() as stack:
        if min(workers, len(chunks)) > 1:
            pool = stack.enter_context(ProcessPoolExecutor(min(workers, len(chunks)), mp_context=get_context("spawn"), initializer=torch.set_num_threads, initargs=(1,)))
            rendered = pool.map(_render_chunk, *zip(*chunks))
        else:
            rendered = map(_render_chunk, *zip(*chunks))
        for start, (chunk_images, chunk_views) in zip(starts, tqdm(rendered, total=len(chunks), desc=f"rendering prior data ({domain})", unit="chunk")):
            images[start : start + len(chunk_views)] = chunk_images
            views[start : start + len(chunk_views)] = chunk_views
    return images, views


def _render_chunk(obj: Tensor, colour: Tensor, cameras: CameraBatch, domain: str) -> tuple[Tensor, Tensor]:
    """uint8 renders [N, H, W, C] and view indices [N] of one chunk."""
    images = torch.empty(len(obj), cameras.height, cameras.width, domain_channels(domain), dtype=torch.uint8)
    # Group by (object, colour) so every sphere trace sees one SDF.
    for key in torch.unique(obj * len(COLOUR_NAMES) + colour):
        o, c = divmod(int(key), len(COLOUR_NAMES))
        rows = ((obj == o) & (colour == c)).nonzero(as_tuple=True)[0]
        if domain == "normal_map":
            rgb, _ = render_normal_map(OBJECTS[OBJECT_NAMES[o]], cameras.subset(rows))
        elif domain == "normal_depth":
            rgb, _ = render_normal_depth(OBJECTS[OBJECT_NAMES[o]], cameras.subset(rows))
        else:
            rgb, _ = render_object(OBJECTS[OBJECT_NAMES[o]], COLOUR_NAMES[c], cameras.subset(rows), lit=domain != "albedo")
        images[rows] = (rgb * 255).round().to(torch.uint8)
    return images, view_index(cameras.elevation_deg, cameras.azimuth_deg)


def captions_for(data: RenderedSet, index: Tensor, generator: torch.Generator, drop_prob: float, plain_prob: float) -> list[str]:
    """Captions for rows `index`: "a {colour} {object}, {view} view" (normal maps: "a normal map
    of a {object}, {view} view", half of them with the colour word: a prompt's colour must not
    change its normal map; the normal-depth and albedo domains, each its own prior's only domain,
    are captioned like colour renders); with probability `plain_prob` without the view suffix, with
    probability `drop_prob` empty (classifier-free guidance)."""
    u = torch.rand(len(index), 2, generator=generator)
    # Drawn only for sets with normal maps, so the colour-only recipes draw what they always drew.
    has_normal_maps = bool((data.domain == DOMAINS.index("normal_map")).any())
    with_colour = torch.rand(len(index), generator=generator) < 0.5 if has_normal_maps else torch.zeros(len(index), dtype=torch.bool)
    captions = []
    for row, (drop, plain), coloured in zip(index.tolist(), u.tolist(), with_colour.tolist()):
        colour, object_name = COLOUR_NAMES[data.colour[row]], OBJECT_NAMES[data.object[row]]
        if DOMAINS[data.domain[row]] == "normal_map":
            text = normal_map_caption(object_name, colour if coloured else None)
        else:
            text = caption(colour, object_name)
        if plain >= plain_prob:
            text = view_dependent_prompt(text, VIEWS[data.view[row]])
        captions.append("" if drop < drop_prob else text)
    return captions
