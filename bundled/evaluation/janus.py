"""The Janus problem, measured: does an asset of an object with a front show its front from the
front and its back from the back?

The asset is rendered near the front (azimuths -30, 0, 30) and near the back (150, 180, -150), at
elevations 0 and 15: 12 views. (At 30 degrees up the judge calls one or two of the true snowman's
12 views wrong in some colours; at 0 and 15 it is right on all of them for the mug, house and
snowman in all 8 colours.) The front/back judge (`bundled.evaluation.view_classifier`, the
one that scores the prior's view words) gives each render a verdict; `view_accuracy` is the share
it puts on the side the camera is on. The true objects score 1.0; a symmetric blob, about 0.5.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bundled.evaluation.prior import compare_size
from bundled.evaluation.view_classifier import FrontBackClassifier
from bundled.evaluation.views import DISTANCE, FOVY_DEG
from framework.cameras.camera import CameraBatch
from framework.guidance.prompts import VIEWS

FRONT_AZIMUTHS_DEG = (-30.0, 0.0, 30.0)
BACK_AZIMUTHS_DEG = (150.0, 180.0, -150.0)
ELEVATIONS_DEG = (0.0, 15.0)


def janus_cameras(resolution: int = 64) -> tuple[CameraBatch, Tensor]:
    """The 12 cameras and the side each is on ([12] VIEWS.index("front") or ("back"))."""
    poses = [(e, a, side) for side, azimuths in (("front", FRONT_AZIMUTHS_DEG), ("back", BACK_AZIMUTHS_DEG)) for e in ELEVATIONS_DEG for a in azimuths]
    n = len(poses)
    cameras = CameraBatch.from_orbit(
        torch.tensor([p[0] for p in poses]), torch.tensor([p[1] for p in poses]), torch.full((n,), DISTANCE), torch.full((n,), FOVY_DEG), resolution
    )
    return cameras, torch.tensor([VIEWS.index(p[2]) for p in poses])


def view_verdicts(renders: Tensor, object_name: str, classifier: FrontBackClassifier | None = None) -> Tensor:
    """The judge's side [V] for renders [V, H, W, 3] on white of an object with a front."""
    judge = classifier or FrontBackClassifier.load()
    return judge.classify(compare_size(renders), [object_name] * renders.shape[0])
