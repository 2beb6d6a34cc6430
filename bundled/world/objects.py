"""The procedural object world of the bundled prior: shapes, colours and captions.

Each object is a union of SDF parts; a part either takes the prompted colour (`colour=None`) or
keeps a fixed detail colour (a door, a carrot nose), which is what gives the composites a clear
front. Objects sit in the unit sphere, +z up, their front facing +x (azimuth 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from torch import Tensor

from bundled.world import sdf

SdfFn = Callable[[Tensor], Tensor]

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.10),
    "orange": (0.95, 0.50, 0.08),
    "yellow": (0.95, 0.85, 0.15),
    "green": (0.15, 0.65, 0.20),
    "cyan": (0.15, 0.75, 0.80),
    "blue": (0.12, 0.25, 0.85),
    "purple": (0.50, 0.18, 0.70),
    "pink": (0.98, 0.55, 0.75),
}

_DARK = (0.12, 0.10, 0.10)
_CARROT = (1.0, 0.45, 0.0)
_WINDOW = (0.55, 0.80, 0.95)


@dataclass(frozen=True)
class Part:
    distance: SdfFn
    colour: tuple[float, float, float] | None = None  # None: the prompted colour


@dataclass(frozen=True)
class ProceduralObject:
    name: str
    parts: tuple[Part, ...]
    has_front: bool = False  # asymmetric composites with a distinct front (view accuracy)

    def evaluate(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Signed distance [...] and index of the nearest part [...] at `points` [..., 3]."""
        distances = torch.stack([part.distance(points) for part in self.parts], dim=-1)
        nearest = distances.min(dim=-1)
        return nearest.values, nearest.indices

    def part_colours(self, colour: str) -> Tensor:
        """[P, 3] albedo of every part for the prompted colour name."""
        base = COLOURS[colour]
        return torch.tensor([part.colour or base for part in self.parts])


def _mug_body(p: Tensor) -> Tensor:
    outer = sdf.cylinder_z(p, 0.40, -0.45, 0.45)
    hollow = sdf.cylinder_z(p, 0.33, -0.36, 0.60)
    return torch.maximum(outer, -hollow)


def _mug_handle(p: Tensor) -> Tensor:
    # The handle sits on +y: the right-hand side of the front view, the left of the back view.
    return sdf.torus(p, 0.20, 0.06, axis="x", centre=(0.0, 0.42, 0.0))


OBJECTS: dict[str, ProceduralObject] = {
    "sphere": ProceduralObject("sphere", (Part(partial(sdf.sphere, radius=0.62)),)),
    "cube": ProceduralObject("cube", (Part(partial(sdf.box, half_size=(0.45, 0.45, 0.45))),)),
    "cylinder": ProceduralObject("cylinder", (Part(partial(sdf.cylinder_z, radius=0.45, z_min=-0.5, z_max=0.5)),)),
    "cone": ProceduralObject("cone", (Part(partial(sdf.cone_z, base_radius=0.55, z_base=-0.5, z_apex=0.6)),)),
    "torus": ProceduralObject("torus", (Part(partial(sdf.torus, major=0.50, minor=0.20)),)),
    "pyramid": ProceduralObject("pyramid", (Part(partial(sdf.square_pyramid, half_base=0.55, z_base=-0.45, z_apex=0.55)),)),
    "mug": ProceduralObject("mug", (Part(_mug_body), Part(_mug_handle)), has_front=True),
    "house": ProceduralObject(
        "house",
        (
            Part(partial(sdf.box, half_size=(0.40, 0.45, 0.30), centre=(0.0, 0.0, -0.25))),
            Part(partial(sdf.roof_prism, half_width_x=0.48, half_length_y=0.50, z_base=0.05, z_ridge=0.45)),
            Part(partial(sdf.box, half_size=(0.12, 0.07, 0.20), centre=(-0.15, -0.25, 0.40))),
            Part(partial(sdf.box, half_size=(0.03, 0.11, 0.19), centre=(0.40, 0.0, -0.36)), _DARK),
            Part(partial(sdf.box, half_size=(0.03, 0.08, 0.08), centre=(0.40, 0.28, -0.15)), _WINDOW),
            Part(partial(sdf.box, half_size=(0.03, 0.08, 0.08), centre=(0.40, -0.28, -0.15)), _WINDOW),
        ),
        has_front=True,
    ),
    "snowman": ProceduralObject(
        "snowman",
        (
            Part(partial(sdf.sphere, radius=0.34, centre=(0.0, 0.0, -0.42))),
            Part(partial(sdf.sphere, radius=0.26, centre=(0.0, 0.0, 0.06))),
            Part(partial(sdf.sphere, radius=0.19, centre=(0.0, 0.0, 0.44))),
            Part(partial(sdf.capped_cone_x, start=(0.15, 0.0, 0.44), length=0.26, radius=0.06), _CARROT),
            Part(partial(sdf.sphere, radius=0.045, centre=(0.15, 0.08, 0.52)), _DARK),
            Part(partial(sdf.sphere, radius=0.045, centre=(0.15, -0.08, 0.52)), _DARK),
            Part(partial(sdf.sphere, radius=0.05, centre=(0.25, 0.0, 0.10)), _DARK),
            Part(partial(sdf.sphere, radius=0.05, centre=(0.25, 0.0, -0.02)), _DARK),
            Part(partial(sdf.sphere, radius=0.06, centre=(0.32, 0.0, -0.35)), _DARK),
        ),
        has_front=True,
    ),
}


def parse_prompt(prompt: str) -> tuple[str, str]:
    """(colour, object) named by a prompt such as "a red mug, front view".

    Raises:
        ValueError: naming the prompt when it mentions no known colour or object.
    """
    words = prompt.lower().replace(",", " ").split()
    colours = [w for w in words if w in COLOURS]
    objects = [w for w in words if w in OBJECTS]
    if not colours or not objects:
        raise ValueError(
            f"prompt {prompt!r} names no object of the bundled world: it needs one of the colours "
            f"{sorted(COLOURS)} and one of the objects {sorted(OBJECTS)}"
        )
    return colours[0], objects[0]


def caption(colour: str, object_name: str) -> str:
    return f"a {colour} {object_name}"


NORMAL_MAP_CAPTION_PREFIX = "a normal map of"


def normal_map_caption(object_name: str, colour: str | None = None) -> str:
    """ "a normal map of a cube" (or "... of a red cube": the words a prompt template makes of a
    colour prompt, e.g. Fantasia3D's geometry slot)."""
    return f"{NORMAL_MAP_CAPTION_PREFIX} {caption(colour, object_name) if colour else f'a {object_name}'}"
