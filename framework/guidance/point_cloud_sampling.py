"""Sampling a point-cloud prior (Point-E's layout): deterministic DDIM with classifier-free
guidance, clipping every x0 estimate to the prior's per-channel bounds. GSGEN starts its Gaussians
from such a sample; the bundled prior's scoring samples every caption with it."""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm import tqdm

from framework.guidance.point_cloud_prior import PointCloudPrior
from framework.guidance.point_e import point_e_scheduler


@torch.no_grad()
def sample_point_clouds(
    prior: PointCloudPrior,
    prompts: list[str],
    generator: torch.Generator,
    steps: int = 64,
    guidance_scale: float = 3.0,
    points: int | None = None,
    batch_size: int = 8,
) -> tuple[Tensor, Tensor]:
    """One cloud per prompt by deterministic DDIM with classifier-free guidance.

    The timesteps are evenly spaced from the last training timestep down ("trailing"), and every
    x0 estimate is clipped to the prior's per-channel bounds (Point-E's `clip_denoised`): at the
    noisiest steps an epsilon model's x0 is its error amplified up to 2e4 times. All starting
    noise is drawn up front from `generator`, so the clouds do not depend on `batch_size`
    (up to float rounding).

    Args:
        prior: from `load_point_cloud_prior`.
        prompts: B prompts ("" is unconditional).
        generator: a CPU generator, the only source of randomness.
        steps: DDIM steps.
        guidance_scale: 1 disables guidance (Point-E's base model samples at 3).
        points: points per cloud (None: the model's `n_ctx`).
        batch_size: prompts denoised together (bounds memory only).

    Returns:
        xyz [B, N, 3] and rgb [B, N, 3] (rgb clamped to [0, 1]), on the CPU.
    """
    if not prompts:
        raise ValueError("prompts is empty: nothing to sample")
    if steps < 1 or batch_size < 1 or (points is not None and points < 1):
        raise ValueError(f"steps={steps}, batch_size={batch_size} and points={points} must be positive")
    config = prior.model.config
    device = next(prior.model.parameters()).device
    alphas = point_e_scheduler().alphas_cumprod.float().to(device)
    total = alphas.shape[0]
    times = torch.linspace(total, 0, steps + 1).round().long() - 1  # T-1, ..., -1 (alpha_bar(-1) = 1)
    noise = torch.randn(len(prompts), config.input_channels, points or config.n_ctx, generator=generator)
    bounds = prior.bounds.to(device)[None, :, None]
    unconditional = prior.text_encoder.encode([""])
    clouds = []
    batches = range(0, len(prompts), batch_size)
    bar = tqdm(total=len(batches) * steps, desc="sampling point prior", unit="step", leave=False)
    for start in batches:
        text = prior.text_encoder.encode(prompts[start : start + batch_size])
        embeddings = torch.cat([text, unconditional.expand_as(text)])
        x = noise[start : start + batch_size].to(device)
        for t, t_prev in zip(times[:-1].tolist(), times[1:].tolist()):
            timesteps = torch.full((2 * x.shape[0],), t, device=device)
            conditional, plain = prior.model(torch.cat([x, x]), timesteps, embeddings)[:, : x.shape[1]].chunk(2)
            epsilon = plain + guidance_scale * (conditional - plain)
            alpha, alpha_prev = alphas[t], alphas[t_prev] if t_prev >= 0 else alphas.new_tensor(1.0)
            x0 = ((x - (1 - alpha).sqrt() * epsilon) / alpha.sqrt()).clamp(-bounds, bounds)
            epsilon = (x - alpha.sqrt() * x0) / (1 - alpha).sqrt()
            x = alpha_prev.sqrt() * x0 + (1 - alpha_prev).sqrt() * epsilon
            bar.update(1)
        clouds.append(x.cpu())
    bar.close()
    xyz, rgb = prior.from_model_space(torch.cat(clouds))
    return xyz, rgb.clamp(0.0, 1.0)
