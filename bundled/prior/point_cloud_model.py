"""The bundled point-cloud prior's architecture: Point-E's text-conditioned denoiser
(`framework.guidance.point_e`) at a CPU size, with a bag-of-words text encoder over the world's
words standing in for CLIP; saved in the folder layout of `framework.guidance.point_cloud_prior`.

Its model space: xyz doubled (as Point-E), rgb 0..1 to [-1, 1] (Point-E's public model takes rgb
in 0..255), and sampling clips x0 to the unit sphere doubled, [-2, 2], instead of Point-E's
[-1, 1], since the world's objects fill the unit sphere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bundled.world.objects import COLOURS, OBJECTS
from framework.guidance.bag_of_words import UNK, BagOfWordsTextEncoder
from framework.guidance.point_e import PointEConfig, PointETransformer

POINT_CLOUD_PRIOR_DIR = Path(__file__).resolve().parents[1] / "point_cloud_prior_weights"
_FILLER_WORDS = ("a", "an", "the")
# Model space of this prior: xyz doubled (as Point-E), rgb 0..1 to [-1, 1].
CHANNEL_SCALES = (2.0, 2.0, 2.0, 2.0, 2.0, 2.0)
CHANNEL_BIASES = (0.0, 0.0, 0.0, -1.0, -1.0, -1.0)
CLIP_BOUNDS = (2.0, 2.0, 2.0, 1.0, 1.0, 1.0)  # model-space |x0| bounds: the unit sphere, rgb 0..1
CONVENTION = (CHANNEL_SCALES, CHANNEL_BIASES, CLIP_BOUNDS)


def world_vocabulary() -> list[str]:
    """`<unk>`, the caption's filler words, then the world's colour and object words."""
    return [UNK, *_FILLER_WORDS, *COLOURS, *OBJECTS]


@dataclass(frozen=True)
class PointCloudPriorArchitecture:
    """Sizes of the bundled point prior: about 0.9 M weights.

    The cost of a step is attention over 1024 points per layer (quadratic in `points`) and the
    MLPs (quadratic in `width`), so width 128 and 4 layers keep a batch-16 training step at
    seconds on one CPU core while the world has only 72 captions, 9 shapes and 8 colours to
    learn; a 64-wide text embedding is ample for a 21-word vocabulary.
    """

    width: int = 128
    layers: int = 4
    heads: int = 4
    text_dim: int = 64
    points: int = 1024

    def point_e_config(self) -> PointEConfig:
        return PointEConfig(n_ctx=self.points, width=self.width, layers=self.layers, heads=self.heads, clip_dim=self.text_dim)


def build_point_cloud_model(arch: PointCloudPriorArchitecture) -> PointETransformer:
    if arch.width % arch.heads:
        raise ValueError(f"width={arch.width} must be a multiple of heads={arch.heads}")
    return PointETransformer(arch.point_e_config())


def build_text_encoder(arch: PointCloudPriorArchitecture) -> BagOfWordsTextEncoder:
    return BagOfWordsTextEncoder(world_vocabulary(), arch.text_dim)


