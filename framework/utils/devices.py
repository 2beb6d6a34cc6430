"""Choosing the torch device: CUDA when present, a clear error when CUDA is asked for and absent."""

from __future__ import annotations

import torch


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when present; 'cuda' without CUDA is a clear error."""
    if device == "auto":
        return default_device()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} but CUDA is not available on this machine")
    return torch.device(device)
