"""On-disk cache of text embeddings keyed by (model, prompt): big text encoders (T5-XXL) are
slow to run and need not be loaded at all once every prompt of a sweep is cached."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from framework.utils.atomic import atomic_path

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "sds3d" / "text_embeddings"


class EmbeddingCache:
    """Maps prompts to embeddings [L, D], computing missing ones with `encode` in one batch.

    Args:
        model_key: identifies the text encoder (e.g. its folder plus a weights fingerprint), so a
            retrained or different model never reads another's embeddings.
        directory: where the safetensors files go; None keeps the cache in memory only.
    """

    def __init__(self, model_key: str, directory: str | Path | None = DEFAULT_CACHE_DIR) -> None:
        self.model_key = model_key
        self.directory = Path(directory).expanduser() if directory is not None else None
        self._memory: dict[str, Tensor] = {}

    def _path(self, prompt: str) -> Path:
        assert self.directory is not None
        digest = hashlib.sha256(f"{self.model_key}\x00{prompt}".encode()).hexdigest()[:32]
        return self.directory / f"{digest}.safetensors"

    def get(self, prompts: list[str], encode: Callable[[list[str]], Tensor]) -> Tensor:
        """Embeddings [N, L, D] of `prompts` (on CPU)."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._memory and not self._load(p)]
        if missing:
            encoded = encode(missing).detach().float().cpu()
            for prompt, embedding in zip(missing, encoded):
                self._memory[prompt] = embedding.clone()
                if self.directory is not None:
                    with atomic_path(self._path(prompt)) as tmp:
                        save_file({"embedding": embedding.contiguous()}, str(tmp), metadata={"prompt": prompt})
        return torch.stack([self._memory[p] for p in prompts])

    def _load(self, prompt: str) -> bool:
        if self.directory is None or not self._path(prompt).exists():
            return False
        self._memory[prompt] = load_file(str(self._path(prompt)))["embedding"]
        return True
