"""Pretraining of the novel-view prior's image encoder as an object and colour classifier.

Zero-1-to-3 starts from a CLIP image embedding that already tells objects apart. Ours starts from
random weights, and trained only through the diffusion loss it learnt colour but not identity
(1753 steps: samples in the right colour, often of the wrong object). Two linear heads on the
projected embedding, trained on the world's renders, make the object and the colour linearly
readable from the one token the denoiser cross-attends to before the denoiser ever sees it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm
from transformers import CLIPVisionModelWithProjection

from bundled.prior.dataset import COLOUR_NAMES, OBJECT_NAMES
from bundled.prior.view_pairs import ViewGroups
from framework.guidance.novel_view import clip_pixels


def _embed(encoder: CLIPVisionModelWithProjection, images: torch.Tensor) -> torch.Tensor:
    """Image embeddings of uint8 renders [B, H, W, 3]."""
    pixels = images.permute(0, 3, 1, 2).float() / 255.0
    return encoder(clip_pixels(pixels, int(encoder.config.image_size))).image_embeds


def pretrain_image_encoder(
    encoder: CLIPVisionModelWithProjection,
    data: ViewGroups,
    steps: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
    validation_share: float = 0.1,
) -> dict[str, float]:
    """Train `encoder` (in place) with object and colour heads on single renders of `data`; the
    heads are dropped afterwards. Returns the accuracies on the last `validation_share` of the
    groups, which training never draws."""
    if steps <= 0 or batch_size <= 0 or not 0.0 < validation_share < 1.0:
        raise ValueError(f"steps={steps} and batch_size={batch_size} must be positive and validation_share={validation_share} in (0, 1)")
    device = next(encoder.parameters()).device
    width = int(encoder.config.projection_dim)
    heads = nn.ModuleDict({"object": nn.Linear(width, len(OBJECT_NAMES)), "colour": nn.Linear(width, len(COLOUR_NAMES))}).to(device)
    optimizer = torch.optim.AdamW([*encoder.parameters(), *heads.parameters()], lr=lr, weight_decay=0.01)
    train_groups = max(1, int(len(data) * (1.0 - validation_share)))
    labels = {"object": data.object.to(device), "colour": data.colour.to(device)}
    encoder.train()
    for step in tqdm(range(steps), desc="pretraining the image encoder", unit="step"):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 50)
        g = torch.randint(train_groups, (batch_size,), generator=generator)
        v = torch.randint(data.views_per_group, (batch_size,), generator=generator)
        embedding = _embed(encoder, data.images[g, v].to(device))
        loss = sum(F.cross_entropy(head(embedding), labels[name][g.to(device)]) for name, head in heads.items())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    encoder.eval()
    return _accuracy(encoder, heads, data, range(train_groups, len(data)), labels)


@torch.no_grad()
def _accuracy(encoder: CLIPVisionModelWithProjection, heads: nn.ModuleDict, data: ViewGroups, groups: range, labels: dict[str, torch.Tensor]) -> dict[str, float]:
    g = torch.tensor(list(groups)).repeat_interleave(data.views_per_group)
    v = torch.arange(data.views_per_group).repeat(len(groups))
    right = {name: 0 for name in heads}
    for start in range(0, len(g), 256):
        rows = slice(start, start + 256)
        embedding = _embed(encoder, data.images[g[rows], v[rows]].to(next(encoder.parameters()).device))
        for name, head in heads.items():
            right[name] += int((head(embedding).argmax(dim=-1) == labels[name][g[rows].to(embedding.device)]).sum())
    return {f"{name}_accuracy": count / max(1, len(g)) for name, count in right.items()}
