"""SDS under a pixel-space text-to-image model: the DeepFloyd IF stage-I family and the bundled
prior (same folder layout: unet/, text_encoder/ (T5), tokenizer/, scheduler/, and optionally
adapters/: caption-routed domain adapters, `framework.guidance.domain_adapters`)."""

from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel
from torch import Tensor
from transformers import AutoTokenizer, T5EncoderModel

from framework.guidance.condition import Condition
from framework.guidance.cuda_graph import GraphedCall
from framework.guidance.domain_adapters import DomainAdapter, DomainAdapters, load_domain_adapters
from framework.guidance.sds import ScoreDistillation, load_component


class PixelDiffusionGuidance(ScoreDistillation):
    """Args:
        pretrained: hub id (e.g. "DeepFloyd/IF-I-XL-v1.0") or local folder (the bundled prior's
            config names its folder).
        text_attention_mask: mask the padding when encoding text, as IF was trained; the bundled
            prior was trained without the mask, so its config turns it off (embeddings differ by
            up to 2.3 otherwise, and the guidance pushes colours the wrong way).
        **kwargs: see `ScoreDistillation`.
    """

    def __init__(self, pretrained: str, text_attention_mask: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.text_attention_mask = text_attention_mask
        self.pretrained = str(pretrained)
        self.tokenizer = load_component(AutoTokenizer, self.pretrained, "tokenizer")
        self.text_encoder = load_component(T5EncoderModel, self.pretrained, "text_encoder")
        self.unet = load_component(UNet2DConditionModel, self.pretrained, "unet")
        self.scheduler = load_component(DDPMScheduler, self.pretrained, "scheduler")
        for module in (self.text_encoder, self.unet):
            module.requires_grad_(False).eval().to(self.device, self.dtype)
        self.resolution = int(self.unet.config.sample_size)
        self.max_tokens = min(int(self.tokenizer.model_max_length), 77)
        self.domain_adapters = load_domain_adapters(self.unet, self.pretrained) if Path(self.pretrained).is_dir() else DomainAdapters()
        self._adapter_calls: dict[str, Callable[..., Tensor]] = {}

    @property
    def model_key(self) -> str:
        return f"{super().model_key}|attention_mask={self.text_attention_mask}"

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> Tensor:
        tokens = self.tokenizer(prompts, padding="max_length", max_length=self.max_tokens, truncation=True, return_tensors="pt")
        mask = tokens.attention_mask.to(self.device) if self.text_attention_mask else None
        return self.text_encoder(tokens.input_ids.to(self.device), attention_mask=mask).last_hidden_state

    def encode_images(self, rgb: Tensor) -> Tensor:
        if rgb.shape[-2:] != (self.resolution, self.resolution):
            rgb = F.interpolate(rgb, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        return rgb * 2.0 - 1.0

    def as_sample(self, images: Tensor) -> Tensor:
        """A pixel prior's sample is the image: the same as `encode_images`."""
        return self.encode_images(images)

    clip_denoised = True

    def decode_samples(self, x0: Tensor, size: tuple[int, int]) -> Tensor:
        images = (x0.float() * 0.5 + 0.5).clamp(0.0, 1.0)
        if images.shape[-2:] != size:
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        return images

    def model_output(self, noisy: Tensor, timesteps: Tensor, conditioning: Tensor) -> Tensor:
        return self._unet_output(self.unet, noisy, timesteps, conditioning)

    def _unet_output(self, unet: Any, noisy: Tensor, timesteps: Tensor, conditioning: Tensor) -> Tensor:
        prediction = unet(noisy.to(self.device), timesteps, encoder_hidden_states=conditioning).sample
        return prediction[:, : noisy.shape[1]]  # IF also predicts a variance

    def noise_predictions(self, noisy: Tensor, timesteps: Tensor, condition: Condition, halves: tuple[str, ...] = ("conditional", "unconditional")) -> tuple[Tensor, ...]:
        """As `ScoreDistillation.noise_predictions`, with the UNet of the domain adapter the
        condition's text belongs to, if any (both halves: the adapter is a whole domain)."""
        adapter = self.domain_adapters.for_captions([condition.text]) if condition.text else None
        with self._calling(adapter):
            return super().noise_predictions(noisy, timesteps, condition, halves)

    @contextmanager
    def _calling(self, adapter: DomainAdapter | None) -> Iterator[None]:
        """The model calls inside the block go to `adapter`'s UNet (None: the prior's own)."""
        if adapter is None:
            yield
            return
        if getattr(self.unet, "peft_config", None):
            raise ValueError(
                f"a LoRA trains on this prior's UNet (VSD), but the prompt is of the domain {adapter.name!r} "
                f"(captions starting {adapter.caption_prefix!r}), which runs its adapter's UNet: use another estimator there"
            )
        if adapter.name not in self._adapter_calls:
            call = partial(self._unet_output, adapter.unet)
            self._adapter_calls[adapter.name] = GraphedCall(call) if isinstance(self._model_call, GraphedCall) else call
        base, self._model_call = self._model_call, self._adapter_calls[adapter.name]
        try:
            yield
        finally:
            self._model_call = base

    def eager(self) -> None:
        super().eager()
        self._adapter_calls.clear()
