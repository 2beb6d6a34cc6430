"""Loading a pixel-space prior folder and sampling images from it (DDIM, classifier-free guidance).

This is how the bundled prior is judged on its own, before any 3D: `scripts/evaluate_prior.py`
samples every prompt of the world with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from torch import Tensor
from tqdm import tqdm
from transformers import AutoTokenizer, PreTrainedTokenizerBase, T5EncoderModel

from bundled.prior.model import MAX_TOKENS
from bundled.prior.weights import BUNDLED_PRIOR_DIR
from framework.guidance.camera_rays import with_camera_rays
from framework.guidance.domain_adapters import DomainAdapters, load_domain_adapters

SUBFOLDERS = ("unet", "text_encoder", "tokenizer", "scheduler")
GUIDANCE_BELOW_T = 600  # the default guidance interval (see `sample_images`)


@dataclass
class LoadedPrior:
    """The four parts of a pixel-space text-to-image prior, float32, in eval mode, and its
    caption-routed domain adapters (`framework.guidance.domain_adapters`)."""

    unet: UNet2DConditionModel
    text_encoder: T5EncoderModel
    tokenizer: PreTrainedTokenizerBase
    scheduler: DDPMScheduler
    domain_adapters: DomainAdapters = field(default_factory=DomainAdapters)

    @property
    def resolution(self) -> int:
        return int(self.unet.config.sample_size)

    @property
    def device(self) -> torch.device:
        return self.unet.device


def load_prior(folder: str | Path = BUNDLED_PRIOR_DIR, device: str | torch.device = "cpu") -> LoadedPrior:
    """Load a prior saved in the IF stage-I folder layout (see `bundled.prior.weights`) onto `device`.

    Raises:
        FileNotFoundError: naming the folder and the first missing subfolder.
    """
    folder = Path(folder)
    for name in SUBFOLDERS:
        if not (folder / name).is_dir():
            raise FileNotFoundError(f"prior folder {folder} is incomplete: subfolder {name!r} is missing")
    # Weights are stored fp16; sampling runs in fp32. (No `accelerate` here, hence
    # low_cpu_mem_usage=False, which the weights' size makes harmless.)
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", dtype=torch.float32, low_cpu_mem_usage=False)
    text_encoder = T5EncoderModel.from_pretrained(folder, subfolder="text_encoder", dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, subfolder="tokenizer")
    scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    unet = unet.to(device).eval()
    return LoadedPrior(unet, text_encoder.to(device).eval(), tokenizer, scheduler, load_domain_adapters(unet, folder))


@torch.no_grad()
def encode_prompts(prior: LoadedPrior, prompts: list[str]) -> Tensor:
    """Text embeddings [B, MAX_TOKENS, C], padded the way the prior was trained."""
    ids = prior.tokenizer(
        prompts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt"
    ).input_ids
    return prior.text_encoder(ids.to(prior.device)).last_hidden_state


@torch.no_grad()
def sample_images(
    prior: LoadedPrior,
    prompts: list[str],
    generator: torch.Generator,
    steps: int = 50,
    guidance_scale: float = 2.0,
    negative_prompt: str = "",
    batch_size: int = 16,
    eta: float = 0.0,
    timestep_spacing: str = "trailing",
    guidance_below_t: int | None = GUIDANCE_BELOW_T,
    cameras: Tensor | None = None,
) -> Tensor:
    """Sample one image per prompt with DDIM and classifier-free guidance.

    All starting noise is drawn up front from `generator` (and, for eta > 0, the per-step noise
    from it too, batch after batch), so with eta 0 the result does not depend on `batch_size`
    (which only bounds memory).

    Args:
        prior: from `load_prior`.
        prompts: B prompts.
        generator: a CPU generator (also when the prior is on a GPU); the only source of randomness.
        steps: DDIM steps.
        guidance_scale: 1 disables guidance; larger follows the prompt harder.
        negative_prompt: the unconditional prompt ("" is what the prior was trained to drop to).
        batch_size: prompts denoised together (each batch of one domain: prompts of a domain
            adapter run on its UNet, `framework.guidance.domain_adapters`).
        eta: 0 is deterministic DDIM; 1 adds DDPM's noise at every step (stochastic sampling).
        timestep_spacing: "trailing" starts at the last training timestep, where no signal is
            left, so the prompt rather than the noise chooses the outline (Lin et al. 2024);
            "leading" starts one stride below it, where the prior reads an outline into the noise.
        guidance_below_t: guide only the steps at timesteps below this; above it the conditional
            prediction alone is used (a guidance interval, Kynkäänniemi et al. 2024). None guides
            every step. Guidance at the noisiest steps, where the outline is chosen, drew the
            bundled prior towards the wrong object: full evaluation, seed 1, guidance 2 at every
            step gave shape accuracy 0.68, guided only below t = 600 0.92 (README).
        cameras: [B, 16] camera inputs of a multi-view prior, one per prompt
            (`framework.guidance.multi_view.camera_condition`); its UNet's attention must group
            the views (`set_multi_view_attention`) and `batch_size` hold whole groups. A UNet
            with camera-ray channels (`framework.guidance.camera_rays`) reads their ray maps too.

    Returns:
        [B, H, W, 3] images in [0, 1], on the CPU.
    """
    if not prompts:
        raise ValueError("prompts is empty: nothing to sample")
    if cameras is not None and cameras.shape[0] != len(prompts):
        raise ValueError(f"{cameras.shape[0]} cameras for {len(prompts)} prompts: give one per prompt")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps={steps} and batch_size={batch_size} must be positive")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta={eta} must lie in [0, 1]")
    if timestep_spacing not in ("leading", "trailing"):
        raise ValueError(f"timestep_spacing={timestep_spacing!r} must be 'leading' or 'trailing'")
    if guidance_below_t is not None and not 0 < guidance_below_t <= prior.scheduler.config.num_train_timesteps:
        raise ValueError(f"guidance_below_t={guidance_below_t} must lie in (0, {prior.scheduler.config.num_train_timesteps}]")
    scheduler = DDIMScheduler.from_config(prior.scheduler.config, timestep_spacing=timestep_spacing)
    scheduler.set_timesteps(steps)
    size = prior.resolution
    channels = prior.unet.config.out_channels
    noise = torch.randn(len(prompts), channels, size, size, generator=generator)
    unconditional = encode_prompts(prior, [negative_prompt])
    # Each batch holds prompts of one domain: a domain adapter's run on its own UNet.
    domains = [prior.domain_adapters.domain_of(prompt) for prompt in prompts]
    batches = []
    for domain in dict.fromkeys(domains):
        rows = [i for i, other in enumerate(domains) if other is domain]
        batches += [(domain, rows[start : start + batch_size]) for start in range(0, len(rows), batch_size)]
    images = torch.empty(len(prompts), channels, size, size)
    bar = tqdm(total=len(batches) * steps, desc="sampling prior", unit="step", leave=False)
    for domain, rows in batches:
        unet = prior.unet if domain is None else domain.unet
        text = encode_prompts(prior, [prompts[i] for i in rows])
        embeddings = torch.cat([text, unconditional.expand_as(text)])
        x = noise[rows].to(prior.device)
        labels = cameras[rows].to(prior.device) if cameras is not None else None
        both = torch.cat([labels, labels]) if labels is not None else None
        for t in scheduler.timesteps:
            if guidance_below_t is None or int(t) < guidance_below_t:
                inputs = with_camera_rays(torch.cat([x, x]), both, unet.config.in_channels)
                text_out, uncond_out = unet(inputs, t, encoder_hidden_states=embeddings, class_labels=both).sample.chunk(2)
                prediction = uncond_out + guidance_scale * (text_out - uncond_out)
            else:
                prediction = unet(with_camera_rays(x, labels, unet.config.in_channels), t, encoder_hidden_states=text, class_labels=labels).sample
            x = scheduler.step(prediction, t, x, eta=eta, generator=generator).prev_sample
            bar.update(1)
        images[rows] = x.cpu()
    bar.close()
    return (images * 0.5 + 0.5).clamp(0.0, 1.0).permute(0, 2, 3, 1)
