"""What a guidance is conditioned on: the text (optional), a reference view (optional) and the
camera of every view it is given (always; camera-conditioned and multi-view priors need them)."""

from __future__ import annotations

from dataclasses import dataclass

from framework.cameras.batch import ReferenceView
from framework.cameras.camera import CameraBatch


@dataclass
class Condition:
    """Attributes:
    cameras: one camera per view the guidance scores.
    text: the prompt, or None for image-only methods.
    reference: the reference view (image, mask, camera), or None for text-to-3D.
    """

    cameras: CameraBatch
    text: str | None = None
    reference: ReferenceView | None = None
