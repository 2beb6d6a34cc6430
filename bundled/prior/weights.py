"""Where the bundled prior lives and how it is written (diffusers/transformers folder layout)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from transformers import PreTrainedTokenizerFast, T5EncoderModel

from framework.utils.atomic import atomic_directory

BUNDLED_PRIOR_DIR = Path(__file__).resolve().parents[1] / "prior_weights"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def project_relative(folder: str | Path) -> str:
    """`folder` relative to the project when inside it, so provenance names no machine's paths."""
    resolved = Path(folder).resolve()
    return str(resolved.relative_to(PROJECT_ROOT)) if resolved.is_relative_to(PROJECT_ROOT) else str(folder)


def save_prior(
    folder: str | Path,
    unet: UNet2DConditionModel,
    text_encoder: T5EncoderModel,
    tokenizer: PreTrainedTokenizerFast,
    scheduler: DDPMScheduler,
    provenance: dict,
    class_name: str = "BundledPixelPrior",
) -> None:
    """Write the model atomically as fp16 safetensors in the IF stage-I folder layout
    (`class_name` names the model in model_index.json: the multi-view prior is
    "BundledMultiViewPrior")."""
    with atomic_directory(folder) as tmp:
        unet.to(torch.float16).save_pretrained(tmp / "unet", safe_serialization=True)
        text_encoder.to(torch.float16).save_pretrained(tmp / "text_encoder", safe_serialization=True)
        unet.to(torch.float32)
        text_encoder.to(torch.float32)
        tokenizer.save_pretrained(tmp / "tokenizer")
        scheduler.save_pretrained(tmp / "scheduler")
        index = {
            "_class_name": class_name,
            "unet": ["diffusers", "UNet2DConditionModel"],
            "text_encoder": ["transformers", "T5EncoderModel"],
            "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
            "scheduler": ["diffusers", "DDPMScheduler"],
        }
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
