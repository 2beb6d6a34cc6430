"""Caption-routed domain adapters: peft LoRA adapters that a prior's folder ships, each for the
captions of one domain ("a normal map of ...").

A call whose captions start with an adapter's prefix runs a copy of the UNet with that adapter on;
every other call runs the UNet as it was loaded, bit for bit. So a small prior learns a new domain
in capacity of its own instead of trading it against the domains it knew: the bundled prior's full
fine-tunes on normal maps gave colour shape and normal-map shape back and forth on one line
(docs/prior_notes.md).

Layout: `<prior>/adapters/<name>/` holds peft's `adapter_config.json` and
`adapter_model.safetensors`, and `domain.json`: `{"caption_prefix": "a normal map of"}`.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load_file, save_file

ADAPTERS_SUBFOLDER = "adapters"
DOMAIN_FILE = "domain.json"
WEIGHTS_FILE = "adapter_model.safetensors"


@dataclass(frozen=True)
class DomainAdapter:
    """`unet`: a copy of the prior's UNet with the adapter `name` on, for captions that start
    with `caption_prefix`."""

    name: str
    caption_prefix: str
    unet: Any = field(repr=False)


@dataclass(frozen=True)
class DomainAdapters:
    """The adapters of one prior (none for a folder without `adapters/`)."""

    adapters: tuple[DomainAdapter, ...] = ()

    def domain_of(self, caption: str) -> DomainAdapter | None:
        """The adapter whose prefix `caption` starts with (the longest, if several do)."""
        matches = [adapter for adapter in self.adapters if caption.startswith(adapter.caption_prefix)]
        return max(matches, key=lambda adapter: len(adapter.caption_prefix)) if matches else None

    def for_captions(self, captions: Sequence[str]) -> DomainAdapter | None:
        """The one adapter for a call's `captions`, None for the prior's own domain.

        Raises:
            ValueError: the captions belong to different domains (one call runs one UNet).
        """
        domains = {caption: self.domain_of(caption) for caption in captions}
        names = {adapter.name if adapter else None for adapter in domains.values()}
        if len(names) > 1:
            raise ValueError(f"captions {sorted(domains)} belong to different domains {sorted(map(str, names))}: give one domain per call")
        return next(iter(domains.values()), None)


def load_domain_adapters(unet: Any, folder: str | Path) -> DomainAdapters:
    """Every adapter in `folder/adapters/`, each on its own copy of `unet` (which stays as it
    is), frozen and in eval mode."""
    root = Path(folder) / ADAPTERS_SUBFOLDER
    if not root.is_dir():
        return DomainAdapters()
    from peft import LoraConfig, set_peft_model_state_dict  # imported here: priors without adapters never need it

    adapters = []
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        for name in ("adapter_config.json", WEIGHTS_FILE, DOMAIN_FILE):
            if not (path / name).is_file():
                raise FileNotFoundError(f"domain adapter {path} is incomplete: {name} is missing")
        adapted = copy.deepcopy(unet)
        adapted.add_adapter(LoraConfig.from_pretrained(str(path)), adapter_name=path.name)
        set_peft_model_state_dict(adapted, load_file(path / WEIGHTS_FILE), adapter_name=path.name)
        adapted.requires_grad_(False).eval()
        prefix = json.loads((path / DOMAIN_FILE).read_text())["caption_prefix"]
        adapters.append(DomainAdapter(path.name, prefix, adapted))
    return DomainAdapters(tuple(adapters))


def save_domain_adapter(folder: str | Path, unet: Any, name: str, caption_prefix: str) -> Path:
    """Write the adapter `name` of a peft-adapted `unet` (its LoRA weights in fp16) into
    `folder/adapters/<name>/`; returns that folder."""
    from peft import get_peft_model_state_dict

    path = Path(folder) / ADAPTERS_SUBFOLDER / name
    path.mkdir(parents=True, exist_ok=True)
    unet.peft_config[name].save_pretrained(str(path))
    weights = get_peft_model_state_dict(unet, adapter_name=name)
    save_file({key: value.detach().to(torch.float16).contiguous().cpu() for key, value in weights.items()}, path / WEIGHTS_FILE)
    (path / DOMAIN_FILE).write_text(json.dumps({"caption_prefix": caption_prefix}) + "\n")
    return path
