"""Denoising an image with a prior through its guidance class: DDIM with classifier-free
guidance from a chosen noise level (DreamGaussian's refinement target; from pure noise, sampling
a conditioned prior the way SDS queries it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from framework.guidance.condition import Condition

if TYPE_CHECKING:  # the estimators (ISM) use `ddim_step`, and sds.py imports the estimators
    from framework.guidance.sds import ScoreDistillation


def ddim_step(sample: Tensor, eps: Tensor, alpha_now: Tensor, alpha_next: Tensor, clip: bool = False) -> Tensor:
    """Deterministic DDIM from alpha_bar `alpha_now` to `alpha_next` (either way: towards the
    image or, for an inversion, away from it) with the noise prediction `eps`; `clip` clamps the
    predicted x0 to [-1, 1] (pixel models)."""
    predicted = (sample - (1 - alpha_now).sqrt() * eps) / alpha_now.sqrt()
    if clip:
        predicted = predicted.clamp(-1.0, 1.0)
    return alpha_next.sqrt() * predicted + (1 - alpha_next).sqrt() * eps


@torch.no_grad()
def denoise(guidance: ScoreDistillation, rgb: Tensor, condition: Condition, strength: float, n_steps: int, guidance_scale: float | None = None) -> Tensor:
    """Noise renders to t = strength * T, then `n_steps` deterministic DDIM steps with
    classifier-free guidance and the condition down to t = 0.

    Args:
        rgb: [B, H, W, 3] renders in [0, 1].
        strength: in (0, 1]; how much of the image the prior may change.
        n_steps: DDIM steps from t = strength * T to 0.
        guidance_scale: classifier-free guidance of these steps (None: the SDS one).

    Returns:
        [B, H, W, 3] denoised images in [0, 1] (no gradient), at the renders' resolution.
    """
    if not 0.0 < strength <= 1.0 or n_steps < 1:
        raise ValueError(f"strength={strength} must be in (0, 1] and n_steps={n_steps} >= 1")
    alphas = guidance.alphas_cumprod
    t_start = max(1, round(strength * (alphas.shape[0] - 1)))
    timesteps = torch.linspace(t_start, 0, n_steps + 1).round().long().unique_consecutive()
    x0 = guidance.encode_images(rgb.permute(0, 3, 1, 2)).detach()
    noise = torch.randn(x0.shape, generator=guidance.generator).to(x0)
    sample = alphas[t_start].sqrt() * x0 + (1 - alphas[t_start]).sqrt() * noise
    for t, t_next in zip(timesteps[:-1].tolist(), timesteps[1:].tolist()):
        eps = guidance.guided_noise(sample, torch.full((x0.shape[0],), t), condition, guidance_scale).to(x0)
        a_next = alphas[t_next].to(x0) if t_next > 0 else torch.ones((), dtype=x0.dtype, device=x0.device)
        sample = ddim_step(sample, eps, alphas[t].to(x0), a_next, guidance.clip_denoised)
    return guidance.decode_samples(sample, tuple(rgb.shape[1:3])).permute(0, 2, 3, 1)
