"""A peft LoRA on a frozen diffusers UNet, switched off except where it is asked for.

`unet.add_adapter(LoraConfig(...))` wraps the attention projections; `LoraWeights` holds only the
adapter's low-rank matrices, so registering it in the system optimises and checkpoints them and
never the frozen weights beside them. The adapter is off outside `enabled`, so every other call of
the same UNet (the pretrained prediction, sampling) sees the prior as it was loaded.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
from torch import nn

ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
ADAPTER = "default"


class LoraWeights(nn.Module):
    """The `lora_A` / `lora_B` modules of an adapted UNet, keyed by their path ('.' -> '__')."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        found = {name: module for name, module in unet.named_modules() if name.rsplit(".", 1)[-1] in ("lora_A", "lora_B")}
        if not found:
            raise ValueError(f"{type(unet).__name__} has no LoRA adapter: add one first")
        self.layers = nn.ModuleDict({name.replace(".", "__"): module for name, module in found.items()})


def add_lora(unet: Any, rank: int, alpha: float | None = None, targets: Sequence[str] = ATTENTION_PROJECTIONS, seed: int = 0) -> LoraWeights:
    """Adds a rank-`rank` adapter (B zero: the adapted UNet starts equal to the prior) in float32,
    initialised from `seed` without touching the global random state, and switches it off."""
    if rank < 1:
        raise ValueError(f"lora rank={rank}: expected >= 1")
    from peft import LoraConfig  # imported here: only VSD runs need it

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, init_lora_weights="gaussian", target_modules=list(targets)), adapter_name=ADAPTER)
    weights = LoraWeights(unet).float()
    _switch_off(unet, weights)
    return weights


@contextmanager
def enabled(unet: Any, weights: LoraWeights) -> Iterator[None]:
    """The adapter on inside the block, off again after it."""
    unet.enable_adapters()
    try:
        yield
    finally:
        _switch_off(unet, weights)


def _switch_off(unet: Any, weights: LoraWeights) -> None:
    """peft's switch also clears the adapter's requires_grad; the weights keep training (a loss
    built while it was on still reaches them, and the optimiser still holds them)."""
    unet.disable_adapters()
    weights.requires_grad_(True)
