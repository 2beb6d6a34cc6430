"""Score distillation sampling (DreamFusion) over any diffusers noise-prediction model.

The guidance sees images (or model-space samples) and a `Condition` (text, cameras, optional
reference view), never a representation or a renderer. Two steps are kept apart: `encode_images`
takes images into the model's space (pixels or VAE latents), `estimate` is the SDS step on
model-space samples, so a sample made another way (Fantasia3D's normal + mask latent) goes
straight to `estimate`. Subclasses say how images are encoded, how the condition is encoded and
how noise is predicted; this class does the rest: view-dependent prompts, timestep schedule,
classifier-free guidance, w(t), clipping.

It is deliberately not an `nn.Module` child of the system, so frozen diffusion weights never enter
a checkpoint; what may train (a LoRA, a camera embedding) it returns from `trainable_modules`, and
the system registers, optimises and checkpoints exactly those. Its generator (timesteps and noise)
is checkpointed by the system.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framework.guidance.condition import Condition
from framework.guidance.cuda_graph import GraphedCall
from framework.guidance.embedding_cache import DEFAULT_CACHE_DIR, EmbeddingCache
from framework.guidance.estimators.base import ScoreEstimator
from framework.guidance.estimators.sds import SCORE_DISTILLATION
from framework.guidance.prompts import VIEWS, ViewThresholds, view_dependent_prompt, view_index
from framework.guidance.vocabulary import unknown_words
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
        self._embeddings: dict[str, dict[str, Tensor]] = {}  # prompt -> view (and "base", "negative") -> [L, D]
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
    def model_output(self, noisy: Tensor, timesteps: Tensor, *conditioning: Tensor) -> Tensor:
        """The UNet's raw prediction for `noisy` samples, with as many channels as `noisy`;
        `conditioning` is what `conditioning` returned (one tensor, or each of a tuple's),
        conditional and unconditional halves stacked along the batch."""

    def trainable_modules(self) -> dict[str, nn.Module]:
        """Parts that train beside the 3D parameters (a LoRA, a camera embedding); none here."""
        return {}

    @property
    def model_key(self) -> str:
        """Identifies the text encoder for the embedding cache."""
        return model_fingerprint(self.pretrained, "text_encoder")

    @property
    def alphas_cumprod(self) -> Tensor:
        """[T] the noise schedule's cumulative alphas (on CPU)."""
        return self.scheduler.alphas_cumprod.float()

    def predict_noise(self, noisy: Tensor, timesteps: Tensor, *conditioning: Tensor) -> Tensor:
        """Epsilon for `noisy` at `timesteps`, converting v-predictions."""
        prediction = self._model_call(noisy, timesteps, *conditioning)
        if self.scheduler.config.prediction_type == "v_prediction":
            alpha_bar = self.alphas_cumprod[timesteps.cpu()].view(-1, 1, 1, 1).to(noisy)
            prediction = epsilon_from_v(prediction, noisy, alpha_bar)
        return prediction

    # --- the condition ------------------------------------------------------------------------
    def prompt_embeddings(self, prompt: str) -> dict[str, Tensor]:
        """The prompt's embeddings, its view-dependent variants' and the negative prompt's,
        encoded once per prompt (and cached on disk when `embedding_cache_dir` is set)."""
        if prompt not in self._embeddings:
            self._warn_unknown_words(prompt)
            texts = {"base": prompt, "negative": self.negative_prompt}
            texts.update({view: view_dependent_prompt(prompt, view) for view in VIEWS})
            cache = EmbeddingCache(self.model_key, self.embedding_cache_dir)
            self._embeddings[prompt] = dict(zip(texts, cache.get(list(texts.values()), self.encode_text)))
        return self._embeddings[prompt]

    def _warn_unknown_words(self, prompt: str) -> None:
        """One warning naming the words of `prompt` (or the negative prompt) that the prior's
        tokenizer reads as its unknown token."""
        for name, text in (("prompt", prompt), ("negative_prompt", self.negative_prompt)):
            words = unknown_words(getattr(self, "tokenizer", None), text)
            if words:
                warnings.warn(
                    f"{name} {text!r}: the prior at {self.pretrained} does not know the word(s) {', '.join(map(repr, words))}; "
                    "it reads each as its unknown token, so they steer nothing",
                    stacklevel=3,
                )

    def conditioning(self, condition: Condition) -> tuple[Tensor | tuple[Tensor, ...], Tensor | tuple[Tensor, ...]]:
        """(conditional, unconditional) model inputs, one per view of `condition`: here the
        prompt's text embeddings [B, L, D] (view-dependent when enabled) and the negative
        prompt's; a family conditioned on several tensors returns a tuple for each half."""
        if not condition.text or not condition.text.strip():
            raise ValueError(f"{type(self).__name__} is a text-to-image prior: it needs prompt=\"...\" (got {condition.text!r})")
        embeddings = self.prompt_embeddings(condition.text)
        batch = condition.cameras.batch_size
        if self.view_dependent:
            views = view_index(condition.cameras.elevation_deg.cpu(), condition.cameras.azimuth_deg.cpu(), self.view_thresholds)
            conditional = torch.stack([embeddings[VIEWS[i]] for i in views.tolist()])
        else:
            conditional = embeddings["base"].expand(batch, -1, -1)
        return conditional, embeddings["negative"].expand(batch, -1, -1)

    # --- shared machinery ---------------------------------------------------------------------
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

    def noise_predictions(self, noisy: Tensor, timesteps: Tensor, condition: Condition, halves: tuple[str, ...] = ("conditional", "unconditional")) -> tuple[Tensor, ...]:
        """Epsilon for `noisy` model-space samples under the named halves of the condition
        ("conditional", "unconditional"), in one batched call of the model (float32)."""
        conditional, unconditional = self.conditioning(condition)
        if isinstance(conditional, Tensor):
            conditional, unconditional = (conditional,), (unconditional,)
        chosen = [{"conditional": conditional, "unconditional": unconditional}[half] for half in halves]
        conditioning = [torch.cat(parts).to(self.device, self.dtype) for parts in zip(*chosen)]
        t = timesteps.to(self.device)
        n = len(halves)
        prediction = self.predict_noise(torch.cat([noisy] * n).to(self.dtype), torch.cat([t] * n), *conditioning).float()
        return prediction.chunk(n)

    def guided_noise(self, noisy: Tensor, timesteps: Tensor, condition: Condition, guidance_scale: float | None = None) -> Tensor:
        """Classifier-free guided epsilon for `noisy` model-space samples (`guidance_scale`:
        None = the configured one)."""
        cond, uncond = self.noise_predictions(noisy, timesteps, condition)
        scale = self.guidance_scale if guidance_scale is None else guidance_scale
        return uncond + scale * (cond - uncond)

    def eager(self) -> None:
        """Call the model directly from now on, never through a CUDA graph: for estimators whose
        trainable parts (a LoRA) change what the model computes between calls."""
        self._model_call = self.model_output

    @property
    def dtype(self) -> torch.dtype:
        return torch.float16 if self.device.type == "cuda" else torch.float32

    def noisy_samples(self, x0: Tensor, timesteps: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) noise."""
        alpha_bar = self.alphas_cumprod[timesteps].to(x0).view(-1, 1, 1, 1)
        return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise

    def estimate(self, x0: Tensor, condition: Condition, step: int, estimator: ScoreEstimator | None = None) -> dict[str, Tensor]:
        """One score-distillation step on model-space samples `x0` [B, C, h, w] (with gradients).

        Draws timesteps and noise, asks `estimator` (SDS when None) for its direction, weights it
        by w(t) and clips it. Returns `loss_<estimator>` (its gradient w.r.t. `x0` is w(t) times
        the direction, divided by the batch size B), `<estimator>_grad_norm` (of the undivided
        gradient), `timestep`, and the estimator's own terms (VSD's LoRA loss).
        """
        estimator = estimator or SCORE_DISTILLATION
        timesteps = self.sample_timesteps(x0.shape[0], step)
        noise = torch.randn(x0.shape, generator=self.generator).to(x0)
        # NaN/Inf (an fp16 overflow, a broken prior) are kept, never zeroed: the loss is then
        # non-finite and the NaN guard (NonFiniteGuard) skips the step and counts it.
        with torch.no_grad():
            direction = estimator.direction(self, x0.detach(), timesteps, noise, condition).to(x0)
        grad = self.weights(timesteps).to(x0).view(-1, 1, 1, 1) * direction
        if self.grad_clip is not None:
            clip = value_at(self.grad_clip, step)
            grad = grad.clamp(-clip, clip)
        target = (x0 - grad).detach()
        loss = 0.5 * F.mse_loss(x0, target, reduction="sum") / x0.shape[0]
        return {
            f"loss_{estimator.name}": loss,
            f"{estimator.name}_grad_norm": grad.norm().detach(),
            "timestep": timesteps.float().mean(),
            **estimator.terms(self, x0.detach(), condition),
        }

    def __call__(self, rgb: Tensor, condition: Condition, step: int, estimator: ScoreEstimator | None = None) -> dict[str, Tensor]:
        """Score distillation of images `rgb` [B, H, W, 3] in [0, 1] seen from
        `condition.cameras`: encode, then `estimate` (SDS unless `estimator` says otherwise)."""
        return self.estimate(self.encode_images(rgb.permute(0, 3, 1, 2)), condition, step, estimator)
