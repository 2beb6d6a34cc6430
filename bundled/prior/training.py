"""The arithmetic every bundled prior's training shares: the loss weight per timestep, the
learning-rate schedule, new words' embeddings and the EMA of the weights (the checkpointed run
around them: training_run.py)."""

from __future__ import annotations

import math

import torch


def loss_weights(alphas_cumprod: torch.Tensor, min_snr_gamma: float, x0_weight_floor: float) -> torch.Tensor:
    """Per-timestep weights of the v loss: min-SNR-gamma on the x0 error, bounded below by
    `x0_weight_floor` (|v error|^2 = (snr + 1) |x0 error|^2)."""
    snr = alphas_cumprod / (1 - alphas_cumprod)
    return snr.clamp(max=min_snr_gamma).clamp(min=x0_weight_floor) / (snr + 1)


def cosine_learning_rate(step: int, lr: float, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up, then a cosine fall to a tenth of `lr` at `total_steps`."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train_only_rows(embedding: torch.nn.Parameter, rows: list[int]) -> None:
    """With the text encoder frozen, the embeddings of new words (`rows`) still learn: every other
    row's gradient is zeroed (and the embedding gets no weight decay, so those rows stay put)."""
    trainable = torch.zeros(embedding.shape[0], 1, device=embedding.device)
    trainable[rows] = 1.0
    embedding.requires_grad_(True)
    embedding.register_hook(lambda grad: grad * trainable)


@torch.no_grad()
def update_ema(ema: list[torch.Tensor], params: list[torch.nn.Parameter], step: int, max_decay: float) -> None:
    """Move the EMA towards the live weights; the decay ramps up over the first steps."""
    decay = min(max_decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
