"""Score distillation sampling (DreamFusion) over any diffusers noise-prediction model.

The guidance sees rendered images and their cameras only. Subclasses say how images enter the
model's space (pixels or VAE latents), how text is encoded and how noise is predicted; this class
does the rest: view-dependent prompts, timestep schedule, classifier-free guidance, w(t), clipping.

It is deliberately not an `nn.Module` child of the system, so frozen diffusion weights never enter
a checkpoint; its generator (timesteps and noise) is checkpointed through `state_dict`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from framework.cameras.camera import CameraBatch
from framework.guidance.cuda_graph import GraphedCall
from framework.guidance.embedding_cache import DEFAULT_CACHE_DIR, EmbeddingCache
from framework.guidance.prompts import VIEWS, ViewThresholds, view_dependent_prompt, view_index
from framework.schedules import Scalar, as_scalar, value_at
from framework.utils.devices import resolve_device

WEIGHTINGS = ("sds", "uniform", "fantasia3d")


def load_component(cls: Any, pretrained: str, subfolder: str, **kwargs: Any) -> Any:
    """`cls.from_pretrained(pretrained, subfolder=...)` with a one-line error for a missing model."""
    if Path(pretrained).is_dir() and not (Path(pretrained) / subfolder).is_dir():
        raise FileNotFoundError(f"model folder {pretrained!r} is incomplete: it has no {subfolder!r} subfolder")
    try:
        return cls.from_pretrained(pretrained, subfolder=subfolder, **kwargs)
    except (OSError, ValueError) as error:
        raise FileNotFoundError(
            f"cannot load {cls.__name__} from {pretrained!r} (subfolder {subfolder!r}): not a complete local model "
            f"folder and not reachable on the hub ({type(error).__name__})"
        ) from None


def model_fingerprint(pretrained: str, subfolder: str) -> str:
    """A cache key for a model's component: the local folder's file sizes and times, or the hub id."""
    folder = Path(pretrained) / subfolder
    if not folder.is_dir():
        return f"hub:{pretrained}/{subfolder}"
    stats = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in folder.iterdir() if p.is_file())
    return f"dir:{folder.resolve()}:{stats}"


def epsilon_from_v(v: Tensor, noisy: Tensor, alpha_bar: Tensor) -> Tensor:
    """Epsilon from a v-prediction: eps = sqrt(a) v + sqrt(1 - a) x_t, `alpha_bar` [B, 1, 1, 1]."""
    return alpha_bar.sqrt() * v + (1 - alpha_bar).sqrt() * noisy


class ScoreDistillation(ABC):
    """SDS with classifier-free guidance.

    Args:
        guidance_scale: classifier-free guidance weight (DreamFusion uses 100 with IF).
        t_min, t_max: timestep range as fractions of the model's training steps (Schedules anneal).
        weighting: w(t): "sds" (1 - alpha_bar), "uniform" (1) or "fantasia3d"
            (sqrt(alpha_bar) * (1 - alpha_bar)).
        grad_clip: clamp of the SDS gradient's elements, or None.
        view_dependent: append ", front/side/back/overhead view" to the prompt per camera.
        negative_prompt: the unconditional prompt of classifier-free guidance.
        device: "auto", "cpu" or "cuda".
        embedding_cache_dir: where text embeddings are cached (None: memory only).
        seed: of the generator that draws timesteps and noise.
        cuda_graphs: on CUDA, replay the frozen model's forward as a CUDA graph (one per input
            shape); small models are launch-bound otherwise. No effect on the CPU.
        world_light: the prior's images are lit like the bundled world (`framework.world.render`:
            a light that follows the camera). Textured meshes made under it can then hold albedo
            (DreamGaussian bakes and refines its texture under that light); with an unknown light
            (photographs: hub models) a texture holds what the renders showed, lighting included.
    """

    def __init__(
        self,
        guidance_scale: float = 100.0,
        t_min: Scalar = 0.02,
        t_max: Scalar = 0.98,
        weighting: str = "sds",
        grad_clip: Scalar | None = None,
        view_dependent: bool = True,
        view_thresholds: ViewThresholds | None = None,
        negative_prompt: str = "",
        device: str = "auto",
        embedding_cache_dir: str | None = str(DEFAULT_CACHE_DIR),
        seed: int = 0,
        cuda_graphs: bool = True,
        world_light: bool = False,
    ) -> None:
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting={weighting!r}: expected one of {WEIGHTINGS}")
        self.guidance_scale = guidance_scale
        self.t_min = as_scalar(t_min)
        self.t_max = as_scalar(t_max)
        self.weighting = weighting
        self.grad_clip = as_scalar(grad_clip) if grad_clip is not None else None
        self.view_dependent = view_dependent
        self.view_thresholds = view_thresholds or ViewThresholds()
        self.negative_prompt = negative_prompt
        self.device = resolve_device(device)
        self.embedding_cache_dir = embedding_cache_dir
        self.generator = torch.Generator().manual_seed(seed)
        self.world_light = world_light
        self._embeddings: dict[str, Tensor] = {}
        # Captures the weights where they are when first called: subclasses place them first.
        self._model_call = GraphedCall(self.model_output) if cuda_graphs else self.model_output

    # --- what a model family provides -------------------------------------------------------
    pretrained: str  # hub id or folder of the model
    scheduler: Any  # its diffusers noise scheduler (for alphas and the prediction type)
    clip_denoised: bool = False  # clamp predicted x0 to the image range while denoising (pixel models)

    @abstractmethod
    def encode_text(self, prompts: list[str]) -> Tensor:
        """Text embeddings [N, L, D] for the UNet's cross-attention."""

    @abstractmethod
    def encode_images(self, rgb: Tensor) -> Tensor:
        """Images [B, 3, H, W] in [0, 1] -> model-space samples x0 (with gradients)."""

    @abstractmethod
    def decode_samples(self, x0: Tensor, size: tuple[int, int]) -> Tensor:
        """Model-space samples -> images [B, 3, H, W] in [0, 1] at `size` (H, W)."""

    @abstractmethod
    def model_output(self, noisy: Tensor, timesteps: Tensor, embeddings: Tensor) -> Tensor:
        """The UNet's raw prediction for `noisy` samples, with as many channels as `noisy`."""

    @property
    def model_key(self) -> str:
        """Identifies the text encoder for the embedding cache."""
        return model_fingerprint(self.pretrained, "text_encoder")

    @property
    def alphas_cumprod(self) -> Tensor:
        """[T] the noise schedule's cumulative alphas (on CPU)."""
        return self.scheduler.alphas_cumprod.float()

    def predict_noise(self, noisy: Tensor, timesteps: Tensor, embeddings: Tensor) -> Tensor:
        """Epsilon for `noisy` at `timesteps`, converting v-predictions."""
        prediction = self._model_call(noisy, timesteps, embeddings)
        if self.scheduler.config.prediction_type == "v_prediction":
            alpha_bar = self.alphas_cumprod[timesteps.cpu()].view(-1, 1, 1, 1).to(noisy)
            prediction = epsilon_from_v(prediction, noisy, alpha_bar)
        return prediction

    # --- shared machinery ---------------------------------------------------------------------
    def set_prompt(self, prompt: str, negative_prompt: str | None = None) -> None:
        """Encode (and cache) the prompt, its view-dependent variants and the negative prompt."""
        if not prompt or not prompt.strip():
            raise ValueError(f"prompt={prompt!r} is empty: give the text to generate")
        if negative_prompt is not None:
            self.negative_prompt = negative_prompt
        texts = {"base": prompt, "negative": self.negative_prompt}
        texts.update({view: view_dependent_prompt(prompt, view) for view in VIEWS})
        cache = EmbeddingCache(self.model_key, self.embedding_cache_dir)
        embeddings = cache.get(list(texts.values()), self.encode_text)
        self._embeddings = {name: e for name, e in zip(texts, embeddings)}

    def conditional_embeddings(self, cameras: CameraBatch) -> Tensor:
        """[B, L, D] the prompt per camera (view-dependent when enabled)."""
        if not self._embeddings:
            raise RuntimeError("call set_prompt(...) before using the guidance")
        if not self.view_dependent:
            return self._embeddings["base"].expand(cameras.batch_size, -1, -1)
        views = view_index(cameras.elevation_deg.cpu(), cameras.azimuth_deg.cpu(), self.view_thresholds)
        return torch.stack([self._embeddings[VIEWS[i]] for i in views.tolist()])

    def sample_timesteps(self, batch_size: int, step: int) -> Tensor:
        n_train = self.alphas_cumprod.shape[0]
        low = int(round(value_at(self.t_min, step) * n_train))
        high = int(round(value_at(self.t_max, step) * n_train))
        low, high = max(low, 1), min(max(high, low + 1), n_train)
        return torch.randint(low, high, (batch_size,), generator=self.generator)

    def weights(self, timesteps: Tensor) -> Tensor:
        alpha_bar = self.alphas_cumprod[timesteps]
        if self.weighting == "sds":
            return 1 - alpha_bar
        if self.weighting == "uniform":
            return torch.ones_like(alpha_bar)
        return alpha_bar.sqrt() * (1 - alpha_bar)

    def guided_noise(self, noisy: Tensor, timesteps: Tensor, cameras: CameraBatch, guidance_scale: float | None = None) -> Tensor:
        """Classifier-free guided epsilon for `noisy` model-space samples (`guidance_scale`:
        None = the configured one)."""
        batch = noisy.shape[0]
        conditional = self.conditional_embeddings(cameras)
        unconditional = self._embeddings["negative"].expand(batch, -1, -1)
        embeddings = torch.cat([conditional, unconditional]).to(self.device, self.dtype)
        t = timesteps.to(self.device)
        noise_pred = self.predict_noise(torch.cat([noisy, noisy]).to(self.dtype), torch.cat([t, t]), embeddings).float()
        cond, uncond = noise_pred.chunk(2)
        scale = self.guidance_scale if guidance_scale is None else guidance_scale
        return uncond + scale * (cond - uncond)

    @property
    def dtype(self) -> torch.dtype:
        return torch.float16 if self.device.type == "cuda" else torch.float32

    @torch.no_grad()
    def sds_gradient(self, x0: Tensor, timesteps: Tensor, noise: Tensor, cameras: CameraBatch) -> Tensor:
        """w(t) (eps_hat - eps) for model-space samples `x0` noised with `noise` at `timesteps`:
        the SDS gradient before clipping (no autograd graph)."""
        alpha_bar = self.alphas_cumprod[timesteps].to(x0).view(-1, 1, 1, 1)
        noisy = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
        noise_pred = self.guided_noise(noisy, timesteps, cameras).to(x0)
        return self.weights(timesteps).to(x0).view(-1, 1, 1, 1) * (noise_pred - noise)

    def __call__(self, rgb: Tensor, cameras: CameraBatch, step: int) -> dict[str, Tensor]:
        """SDS loss of renders `rgb` [B, H, W, 3] in [0, 1] seen from `cameras`.

        Returns `loss_sds` (its gradient w.r.t. the model-space sample is w(t) (eps_hat - eps)),
        plus `sds_grad_norm` and `timestep` for logging.
        """
        images = rgb.permute(0, 3, 1, 2)
        x0 = self.encode_images(images)
        timesteps = self.sample_timesteps(x0.shape[0], step)
        noise = torch.randn(x0.shape, generator=self.generator).to(x0)
        grad = torch.nan_to_num(self.sds_gradient(x0, timesteps, noise, cameras), nan=0.0, posinf=0.0, neginf=0.0)
        if self.grad_clip is not None:
            clip = value_at(self.grad_clip, step)
            grad = grad.clamp(-clip, clip)
        target = (x0 - grad).detach()
        loss = 0.5 * F.mse_loss(x0, target, reduction="sum") / x0.shape[0]
        return {
            "loss_sds": loss,
            "sds_grad_norm": grad.norm().detach(),
            "timestep": timesteps.float().mean(),
        }

    @torch.no_grad()
    def refine(self, rgb: Tensor, cameras: CameraBatch, strength: float, n_steps: int, guidance_scale: float | None = None) -> Tensor:
        """Multi-step denoising of renders (DreamGaussian's stage 2 target): noise to
        t = strength * T, then `n_steps` deterministic DDIM steps with classifier-free guidance and
        the view-dependent prompt down to t = 0.

        Args:
            rgb: [B, H, W, 3] renders in [0, 1].
            strength: in (0, 1]; how much of the image the prior may change.
            n_steps: DDIM steps from t = strength * T to 0.
            guidance_scale: classifier-free guidance of these steps (None: the SDS one).

        Returns:
            [B, H, W, 3] refined images in [0, 1] (no gradient), at the renders' resolution.
        """
        if not 0.0 < strength <= 1.0 or n_steps < 1:
            raise ValueError(f"strength={strength} must be in (0, 1] and n_steps={n_steps} >= 1")
        alphas = self.alphas_cumprod
        t_start = max(1, int(round(strength * (alphas.shape[0] - 1))))
        timesteps = torch.linspace(t_start, 0, n_steps + 1).round().long().unique_consecutive()
        x0 = self.encode_images(rgb.permute(0, 3, 1, 2)).detach()
        noise = torch.randn(x0.shape, generator=self.generator).to(x0)
        sample = alphas[t_start].sqrt() * x0 + (1 - alphas[t_start]).sqrt() * noise
        for t, t_next in zip(timesteps[:-1].tolist(), timesteps[1:].tolist()):
            eps = self.guided_noise(sample, torch.full((x0.shape[0],), t), cameras, guidance_scale).to(x0)
            a_t = alphas[t].to(x0)
            predicted = (sample - (1 - a_t).sqrt() * eps) / a_t.sqrt()
            if self.clip_denoised:
                predicted = predicted.clamp(-1.0, 1.0)
            a_next = alphas[t_next].to(x0) if t_next > 0 else torch.ones((), dtype=x0.dtype, device=x0.device)
            sample = a_next.sqrt() * predicted + (1 - a_next).sqrt() * eps
        return self.decode_samples(sample, tuple(rgb.shape[1:3])).permute(0, 2, 3, 1)

    def state_dict(self) -> dict[str, Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["generator"])
