"""Checkpoint files: written atomically, read back safely (tensors and plain data only)."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from framework.utils.atomic import atomic_path


def load_checkpoint_file(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """`torch.load(weights_only=True)` with a one-line error naming a missing, truncated or
    foreign file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} " + ("is not a file" if path.exists() else "does not exist"))
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as error:
        raise ValueError(f"checkpoint {str(path)!r} cannot be read ({type(error).__name__})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as error:
        # A pickle that would build arbitrary objects (and so could run code) ends up here too.
        raise ValueError(f"checkpoint {str(path)!r} is truncated or not a checkpoint of ours ({type(error).__name__})") from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise ValueError(f"checkpoint {str(path)!r} holds no 'state_dict': not a checkpoint of ours")
    return state


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint_file(path, map_location)
