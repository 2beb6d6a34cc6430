"""Training data and loss of the bundled point-cloud prior (Point-E's recipe on the procedural world).

Every batch item is a (caption, point cloud) pair of a random object and colour, its points drawn
afresh from the object's surface (`bundled.world.point_clouds`), so no two batches repeat a
cloud and the model cannot learn one particular sampling. The loss is the MSE of the 6 epsilon
channels under Point-E's cosine schedule, weighted per timestep (`LOSS_WEIGHTINGS`). The 6 variance channels (Point-E's "learned_range",
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

LOSS_WEIGHTINGS = ("x0", "epsilon")
"""How the epsilon MSE is weighted per timestep. "x0": by 1 / SNR(t), capped at `X0_WEIGHT_CAP`,
which is the MSE of the predicted clean cloud: the caption then matters. "epsilon": uniformly, as
Point-E; on this world the prior never learnt to read its caption that way (tiny models, 800
steps: the x0 error of the right and a wrong caption agreed to 0.001, against 0.186 / 0.278 for
"x0"; docs/prior_notes.md), since at low noise the points themselves tell shape and colour and at
high noise an x0 error reaches the epsilon loss scaled down by sqrt(SNR)."""
X0_WEIGHT_CAP = 20.0

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
    model: PointETransformer,
    text_encoder: BagOfWordsTextEncoder,
    scheduler: DDPMScheduler,
    clean: Tensor,
    captions: list[str],
    generator: torch.Generator,
    weighting: str = "epsilon",
) -> Tensor:
    """Squared error of the predicted noise (output channels 0..5) at uniform timesteps, weighted
    per timestep by `weighting` (one of `LOSS_WEIGHTINGS`).

    The timesteps and noise come from the CPU `generator`, so a resumed run draws what an
    uninterrupted one would; `clean` may live on any device.
    """
    if weighting not in LOSS_WEIGHTINGS:
        raise ValueError(f"weighting={weighting!r}: expected one of {LOSS_WEIGHTINGS}")
    timesteps = torch.randint(scheduler.config.num_train_timesteps, (clean.shape[0],), generator=generator).to(clean.device)
    noise = torch.randn(clean.shape, generator=generator).to(clean.device)
    noisy = scheduler.add_noise(clean, noise, timesteps)
    prediction = model(noisy, timesteps, text_encoder.encode(captions))
    errors = F.mse_loss(prediction[:, : clean.shape[1]], noise, reduction="none").mean(dim=(1, 2))
    if weighting == "epsilon":
        return errors.mean()
    alpha_bar = scheduler.alphas_cumprod.to(clean.device)[timesteps]
    weights = ((1 - alpha_bar) / alpha_bar).clamp(max=X0_WEIGHT_CAP)
    return (weights * errors).mean()


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
