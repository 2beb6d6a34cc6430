"""Rendered training data kept in a prior's work dir: rendering takes minutes, and a rerun that
resumes the training must draw from the very same images."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from framework.utils.atomic import atomic_path


def cached_renders(path: Path, render: Callable[[], object]) -> dict:
    """The fields of the rendered data (a dataclass such as RenderedSet or ViewGroups): read from
    `path`, or made by `render` and written there atomically."""
    if path.exists():
        return torch.load(path, weights_only=True)
    fields = vars(render())
    with atomic_path(path) as tmp:
        torch.save(fields, tmp)
    return fields
