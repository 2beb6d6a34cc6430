"""Training data and loss of the bundled point-cloud prior (Point-E's recipe on the procedural world).

Every batch item is a (caption, point cloud) pair of a random object and colour, its points drawn
afresh from the object's surface (`bundled.world.point_clouds`), so no two batches repeat a
cloud and the model cannot learn one particular sampling. The loss is Point-E's epsilon MSE on the
6 epsilon channels under its cosine schedule. The 6 variance channels (Point-E's "learned_range",
trained there with a variational-bound term) get no loss here: DDIM and SDS read epsilon only, so
their output is untrained and must not be used.
"""

from __future__ import annotations

import subprocess
from datetime import datetime, timezone

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch import Tensor

from bundled.prior.point_cloud_model import CHANNEL_BIASES, CHANNEL_SCALES
from framework.guidance.bag_of_words import BagOfWordsTextEncoder
from framework.guidance.point_cloud_prior import to_model_space
from bundled.prior.weights import PROJECT_ROOT
from bundled.world.objects import COLOURS, OBJECTS, caption
from bundled.world.point_clouds import surface_points
from framework.guidance.point_e import PointETransformer

PAIRS: tuple[tuple[str, str], ...] = tuple((colour, name) for name in OBJECTS for colour in COLOURS)
"""Every (colour, object) of the world: the training captions."""


def draw_batch(batch_size: int, points: int, generator: torch.Generator, caption_dropout: float) -> tuple[Tensor, list[str]]:
    """A batch of clean clouds in model space [B, 6, points] and their captions; a
    `caption_dropout` share of the captions is "" (the zero embedding: classifier-free guidance's
    unconditional branch)."""
    rows = torch.randint(len(PAIRS), (batch_size,), generator=generator).tolist()
    dropped = (torch.rand(batch_size, generator=generator) < caption_dropout).tolist()
    clouds = [surface_points(OBJECTS[PAIRS[r][1]], PAIRS[r][0], points, generator) for r in rows]
    xyz, rgb = torch.stack([c[0] for c in clouds]), torch.stack([c[1] for c in clouds])
    captions = ["" if d else caption(*PAIRS[r]) for r, d in zip(rows, dropped)]
    return to_model_space(xyz, rgb, CHANNEL_SCALES, CHANNEL_BIASES), captions


def epsilon_loss(
    model: PointETransformer, text_encoder: BagOfWordsTextEncoder, scheduler: DDPMScheduler, clean: Tensor, captions: list[str], generator: torch.Generator
) -> Tensor:
    """Mean squared error of the predicted noise (output channels 0..5) at uniform timesteps.

    The timesteps and noise come from the CPU `generator`, so a resumed run draws what an
    uninterrupted one would; `clean` may live on any device.
    """
    timesteps = torch.randint(scheduler.config.num_train_timesteps, (clean.shape[0],), generator=generator).to(clean.device)
    noise = torch.randn(clean.shape, generator=generator).to(clean.device)
    noisy = scheduler.add_noise(clean, noise, timesteps)
    prediction = model(noisy, timesteps, text_encoder.encode(captions))
    return F.mse_loss(prediction[:, : clean.shape[1]], noise)


def code_version() -> dict:
    """The git commit of the project and whether its tree differed from it, new files included
    (None outside a checkout)."""

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain")
    return {"git_commit": commit, "git_dirty": bool(status) if commit is not None and status is not None else None}


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
