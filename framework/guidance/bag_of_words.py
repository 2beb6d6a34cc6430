"""A bag-of-words text encoder: the prompt as the L2-normalised mean of its words' embeddings.

It stands in for CLIP's unit-norm text feature where a prior's world has a small word-level
vocabulary (the bundled point-cloud prior, Point-E's layout): word order carries nothing there.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

UNK = "<unk>"


def prompt_words(prompt: str) -> list[str]:
    """Lower-case words of a prompt; punctuation separates words and is dropped."""
    return re.findall(r"[a-z0-9]+", prompt.lower())


class BagOfWordsTextEncoder(nn.Module):
    """The prompt as the L2-normalised mean of its words' embeddings, like CLIP's unit-norm text
    feature that Point-E reads.

    Unknown words take the `<unk>` row, which starts at zero. Training captions hold no unknown
    words, so the row stays zero (AdamW moves neither a zero gradient nor a zero weight), and an
    unknown word then leaves the normalised direction alone: "a red mug, front view" encodes as
    "a red mug". A prompt with no known word, such as "", encodes as constant zeros, Point-E's
    unconditional embedding, with no gradient (normalising a zero vector would scale its
    gradient by 1e12).
    """

    def __init__(self, vocabulary: list[str], dim: int) -> None:
        super().__init__()
        if len(set(vocabulary)) != len(vocabulary) or UNK not in vocabulary:
            raise ValueError(f"the vocabulary needs distinct words including {UNK!r}; got {vocabulary}")
        self.vocabulary = list(vocabulary)
        self.index = {word: i for i, word in enumerate(self.vocabulary)}
        self.embedding = nn.EmbeddingBag(len(self.vocabulary), dim, mode="mean")
        with torch.no_grad():
            self.embedding.weight[self.index[UNK]] = 0.0

    @property
    def dim(self) -> int:
        return self.embedding.embedding_dim

    def encode(self, prompts: list[str]) -> Tensor:
        """Unit-norm embeddings [B, dim] of the prompts (zeros where no word is known)."""
        device = self.embedding.weight.device
        unk = self.index[UNK]
        words = [prompt_words(prompt) for prompt in prompts]
        known = torch.tensor([any(word in self.index for word in row) for row in words], device=device)
        ids = [[self.index.get(word, unk) for word in row] or [unk] for row in words]
        offsets = torch.tensor([0, *[len(row) for row in ids[:-1]]], device=device).cumsum(0)
        flat = torch.tensor([i for row in ids for i in row], device=device)
        bags = self.embedding(flat, offsets)
        # Unknown-only rows get a unit placeholder before normalising, then zeros: no gradient there.
        normalised = F.normalize(torch.where(known[:, None], bags, torch.ones_like(bags)), dim=-1)
        return torch.where(known[:, None], normalised, torch.zeros_like(normalised))
