"""Checkpoint files: written atomically and stamped with what they are, read back safely (tensors
and plain data only), and every load problem told in one line.

A checkpoint records its method (`experiment`), its stage (the system's `on_save_checkpoint`) and
`format_version`, so a wrong file is refused before any weights load: not a checkpoint, truncated,
an unsafe pickle, another method's checkpoint, a newer format. A checkpoint of this method that
still does not fit the run (other sizes or keys: another configuration) fails while Lightning
restores it; `RestoreGuard` turns that failure into one line too.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from framework.utils.atomic import atomic_path

CHECKPOINT_FORMAT = 1  # raise when what a checkpoint holds changes incompatibly; older formats stay readable
ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive
MAX_DETAIL = 240  # characters of a restore error kept in its line (a state-dict error lists every key)


def _unsafe_global(error: Exception) -> str:
    """The object a refused pickle would have built, from torch's message ("GLOBAL posix.system")."""
    match = re.search(r"GLOBAL ([\w.]+)", str(error))
    return match.group(1) if match else "an arbitrary Python object"


def load_checkpoint_file(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    """`torch.load(weights_only=True)`, every problem one line (`FileNotFoundError` or `ValueError`):
    missing, not a checkpoint, truncated or damaged, a pickle refused for safety. `mmap=True` maps the
    tensors instead of reading them (a quick look at the stamp)."""
    path = Path(path)
    name = repr(str(path))
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {name} " + ("is not a file" if path.exists() else "does not exist"))
    try:
        with open(path, "rb") as file:
            head = file.read(len(ZIP_MAGIC))
    except OSError as error:
        raise ValueError(f"checkpoint {name} cannot be read ({type(error).__name__}: {error.strerror})") from None
    if not head:
        raise ValueError(f"checkpoint {name} is empty: not a checkpoint")
    if head != ZIP_MAGIC:
        raise ValueError(f"checkpoint {name} is not a checkpoint (not a file torch.save wrote)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        if "weights_only" in str(error) or "GLOBAL" in str(error):
            raise ValueError(
                f"checkpoint {name} was refused for safety: loading it would build {_unsafe_global(error)}, which can run code "
                "(only tensors and plain data are loaded)"
            ) from None
        raise ValueError(f"checkpoint {name} is truncated or damaged (UnpicklingError)") from None
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile, KeyError, IndexError, ValueError, TypeError, AttributeError) as error:
        # Its start was readable: what fails now is its content (mapping a cut file fails with OSError).
        raise ValueError(f"checkpoint {name} is truncated or damaged ({type(error).__name__})") from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise ValueError(f"checkpoint {name} holds no 'state_dict': not a checkpoint of ours")
    return state


def check_checkpoint(state: dict[str, Any], path: str | Path, experiment: str | None) -> None:
    """Refuse, in one line, a checkpoint of a newer format or of another method than `experiment`
    (None: any). Checkpoints written before the stamp (format 0) name no method and pass."""
    name = repr(str(path))
    version = state.get("format_version", 0)
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint {name} has format {version!r}, newer than this sds3d reads ({CHECKPOINT_FORMAT} and older): update sds3d")
    theirs = state.get("experiment")
    if experiment is not None and theirs is not None and theirs != experiment:
        raise ValueError(f"checkpoint {name} is a {theirs} checkpoint and this run is {experiment}: use it with experiment={theirs}")


def read_checkpoint(path: str | Path, experiment: str | None, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    """A checkpoint of `experiment` (None: of any method), every problem one line."""
    state = load_checkpoint_file(path, map_location, mmap=mmap)
    check_checkpoint(state, path, experiment)
    return state


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO: atomic writes stamped with the method and format; loads checked
    (`read_checkpoint`). `loaded` is the last checkpoint it loaded (`RestoreGuard` reads it)."""

    def __init__(self, experiment: str | None = None) -> None:
        super().__init__()
        self.experiment = experiment
        self.loaded: str | None = None

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        checkpoint["format_version"] = CHECKPOINT_FORMAT
        if self.experiment is not None:
            checkpoint["experiment"] = self.experiment
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        state = read_checkpoint(path, self.experiment, map_location)  # its own errors are one line already
        self.loaded = str(path)
        return state


class RestoreGuard(pl.Callback):
    """Tells a checkpoint that does not fit this run (other sizes, keys or stages: another
    configuration) from a failure of the run itself: an error after `io` loaded a checkpoint and
    before the first training step comes from restoring it."""

    def __init__(self, io: AtomicCheckpointIO) -> None:
        self.io = io
        self.training = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.training = True

    def explain(self, error: Exception, experiment: str | None) -> ValueError | None:
        """The one-line error for a failure while restoring a checkpoint; None for any other failure."""
        if self.io.loaded is None or self.training:
            return None
        text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        detail = f"{type(error).__name__}: {text[:MAX_DETAIL]}{'...' if len(text) > MAX_DETAIL else ''}" if text else type(error).__name__
        run = f"this {experiment} run" if experiment else "this run"
        return ValueError(f"checkpoint {self.io.loaded!r} does not fit {run} (another configuration?): {detail}")
