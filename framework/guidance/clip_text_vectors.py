"""CLIP's text feature as Point-E reads it: the projected end-of-text embedding, L2-normalised,
with zeros for "" (Point-E's unconditional input is the zero vector, not CLIP's empty prompt)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import AutoTokenizer, CLIPTextModelWithProjection

from framework.guidance.sds import load_component


class ClipTextVectors(nn.Module):
    """Args:
    pretrained: a CLIP model's hub id or local folder (for Point-E: openai/clip-vit-large-patch14).
    subfolder: where the text model and the tokenizer sit in it ("": the root, as in CLIP's own
        repositories; "text_encoder" and "tokenizer" in a diffusers pipeline's are two subfolders,
        so give the pipeline's text_encoder folder there).
    """

    def __init__(self, pretrained: str, subfolder: str = "") -> None:
        super().__init__()
        self.tokenizer = load_component(AutoTokenizer, pretrained, subfolder)
        self.model = load_component(CLIPTextModelWithProjection, pretrained, subfolder).requires_grad_(False).eval()

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> Tensor:
        device = self.model.text_projection.weight.device
        tokens = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=self.tokenizer.model_max_length, return_tensors="pt")
        features = self.model(tokens.input_ids.to(device)).text_embeds.float()
        features = features / features.norm(dim=-1, keepdim=True)
        empty = torch.tensor([not prompt.strip() for prompt in prompts], device=device)
        return torch.where(empty[:, None], torch.zeros_like(features), features)
