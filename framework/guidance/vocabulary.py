"""Words a prior cannot read. A word-level vocabulary (the bundled prior's) turns every word it
lacks into one unknown token, so "a DSLR photo of a corgi" reaches it as "<unk> <unk> of a <unk>"
and the run optimises towards a prompt the user never wrote. Subword vocabularies (CLIP's BPE,
T5's sentencepiece) spell out any word and report nothing here."""

from __future__ import annotations

import re
from typing import Any

_WORD = re.compile(r"[\w'-]+")


def unknown_words(tokenizer: Any, text: str) -> list[str]:
    """The words of `text` (in order, each once) that `tokenizer` can only read as its unknown
    token; none when it has no unknown token."""
    unknown_id = getattr(tokenizer, "unk_token_id", None)
    if unknown_id is None:
        return []
    words = dict.fromkeys(_WORD.findall(text))
    return [word for word in words if unknown_id in tokenizer(word, add_special_tokens=False).input_ids]
