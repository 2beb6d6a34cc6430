"""Training data of the bundled novel-view and multi-view priors: groups of renders of one object
in one colour from several cameras of the SDS sampler's distribution. For the novel-view prior any
two views of a group make a training pair (input view, target view), so G groups of V views give
G V (V - 1) pairs; for the multi-view prior a group is one view set, denoised together.

Some colour/object pairs are held out of training, so the prior is scored on objects it has never
seen in that colour (`HELD_OUT`); `SEEN` names as many trained-on pairs, to tune a sampler on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bundled.prior.dataset import COLOUR_NAMES, OBJECT_NAMES, domain_channels, render_rows
from framework.cameras.camera import CameraBatch
from framework.cameras.distribution import OrbitDistribution


def _one_colour_per_object(offset: int) -> tuple[tuple[str, str], ...]:
    """Object i in colour (3 i + offset) mod 8: every colour comes once or twice."""
    return tuple((COLOUR_NAMES[(3 * i + offset) % len(COLOUR_NAMES)], name) for i, name in enumerate(OBJECT_NAMES))


# Fixed by rule before any training.
HELD_OUT: tuple[tuple[str, str], ...] = _one_colour_per_object(1)
# Trained-on pairs, where a sampler setting such as the guidance scale is chosen without looking
# at the held-out pairs.
SEEN: tuple[tuple[str, str], ...] = _one_colour_per_object(2)


@dataclass
class ViewGroups:
    images: Tensor  # [G, V, H, W, C] uint8
    colour: Tensor  # [G] index into COLOUR_NAMES
    object: Tensor  # [G] index into OBJECT_NAMES
    elevation_deg: Tensor  # [G, V]
    azimuth_deg: Tensor  # [G, V]
    distance: Tensor  # [G, V]
    fovy_deg: Tensor  # [G, V]

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def views_per_group(self) -> int:
        return self.images.shape[1]

    def cameras(self, group: Tensor, view: Tensor) -> CameraBatch:
        """The cameras of views `view` [B] of groups `group` [B]."""
        pick = lambda values: values[group, view]  # noqa: E731
        return CameraBatch.from_orbit(pick(self.elevation_deg), pick(self.azimuth_deg), pick(self.distance), pick(self.fovy_deg), self.images.shape[2])


def training_pairs(held_out: tuple[tuple[str, str], ...] = HELD_OUT) -> list[tuple[int, int]]:
    """(colour, object) indices of every pair that is not held out."""
    excluded = {(COLOUR_NAMES.index(c), OBJECT_NAMES.index(o)) for c, o in held_out}
    return [(c, o) for o in range(len(OBJECT_NAMES)) for c in range(len(COLOUR_NAMES)) if (c, o) not in excluded]


def render_view_groups(
    groups: int,
    views: int,
    resolution: int,
    seed: int,
    workers: int = 1,
    held_out: tuple[tuple[str, str], ...] = HELD_OUT,
    orbit_sets: bool = False,
    domain: str = "colour",
) -> ViewGroups:
    """`groups` groups of `views` renders, each group one (colour, object) pair drawn uniformly
    from the pairs not held out; deterministic in `seed` for any number of `workers`. The cameras
    are independent draws of the SDS distribution, or with `orbit_sets` MVDream's view sets
    (`OrbitDistribution.sample_groups`: one elevation, azimuths evenly apart). `domain` picks
    what is rendered (`bundled.prior.dataset.DOMAINS`); the draws do not depend on it."""
    if groups <= 0 or views < 2:
        raise ValueError(f"groups={groups} must be positive and views={views} at least 2 (a pair)")
    generator = torch.Generator().manual_seed(seed)
    allowed = torch.tensor(training_pairs(held_out))
    pair = allowed[torch.randint(len(allowed), (groups,), generator=generator)]
    colour, obj = pair[:, 0], pair[:, 1]
    distribution = OrbitDistribution()
    cameras = distribution.sample_groups(groups, views, resolution, generator) if orbit_sets else distribution.sample(groups * views, resolution, generator)
    per_chunk = max(1, 64 // views) * views
    chunks = [cameras.subset(slice(a, a + per_chunk)) for a in range(0, groups * views, per_chunk)]
    images, _ = render_rows(obj.repeat_interleave(views), colour.repeat_interleave(views), chunks, workers, domain)
    shape = (groups, views)
    return ViewGroups(
        images.view(groups, views, resolution, resolution, domain_channels(domain)),
        colour,
        obj,
        cameras.elevation_deg.view(shape),
        cameras.azimuth_deg.view(shape),
        cameras.distance.view(shape),
        cameras.fovy_deg.view(shape),
    )


def draw_pairs(data: ViewGroups, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """(group [B], input view [B], target view [B]) of `batch_size` random pairs of distinct views."""
    group = torch.randint(len(data), (batch_size,), generator=generator)
    source = torch.randint(data.views_per_group, (batch_size,), generator=generator)
    offset = torch.randint(1, data.views_per_group, (batch_size,), generator=generator)
    return group, source, (source + offset) % data.views_per_group
