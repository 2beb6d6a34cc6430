"""A run directory belongs to one run.

Two runs sharing a folder mix their metrics, exports and checkpoints, and a later `resume=auto`
loads the other run's weights. So: a default run folder is made here in one `mkdir` (two runs
started in the same second get `<time>` and `<time>-2`); a run never starts in a folder that holds
another run's files, only the same run continuing there (`resume=`, or a requeued sweep job); and a
run refused before it started leaves no folder behind. Hydra writes nothing into the folder before
these checks (`hydra.output_subdir: null`; it only opens its job log there, appending): launch
writes `.hydra/` once the folder is this run's.
"""

from __future__ import annotations

import os
import shutil
import socket
from itertools import count
from pathlib import Path
from typing import Any, Iterable, Mapping

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from framework.utils.atomic import atomic_path
from framework.utils.run_record import read_record

RESUME_KEYS = ("resume", "+resume", "++resume", "~resume")

# Run folder -> the topmost folder this process made for it (the folder itself, or a parent of it).
_made: dict[Path, Path] = {}


def _absolute(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(path))


def _first_missing(path: Path) -> Path | None:
    """The topmost folder of `path` that does not exist yet (None: `path` exists)."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def unique_run_dir(root: str, relative: str) -> str:
    """`${unique_run_dir:<output_root>,<experiment>/<prompt>/<time>}`: a new, empty folder
    ROOT/RELATIVE made now, or RELATIVE-2, -3, ... when a run started in the same second took it."""
    base = _absolute(Path(str(root)) / str(relative))
    top = _first_missing(base.parent)
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
        for n in count(1):
            path = base if n == 1 else base.with_name(f"{base.name}-{n}")
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ValueError(f"output_root={str(root)!r} cannot hold run folders: making {str(error.filename or base)!r} failed ({reason})") from None
    _made[path] = top or path
    return str(path)


class RunDirWatch(Callback):
    """Notes, before Hydra makes a run's folder (`hydra.run.dir`), which part of it is new: a run
    refused before it starts removes only what it made."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            path = _absolute(str(OmegaConf.select(config, "hydra.run.dir")))
        except Exception:  # a bad output_root: reported when Hydra makes the folder
            return
        top = _first_missing(path)
        if path not in _made and top is not None:
            _made[path] = top


def discard_run_dir(run_dir: str | os.PathLike) -> None:
    """Remove the folder of a run refused before it started, and the empty parents made for it,
    if this process made them; a folder that existed before is left as it was."""
    path = _absolute(run_dir)
    top = _made.pop(path, None)
    if top is None:
        return
    shutil.rmtree(path, ignore_errors=True)
    while path != top and top in path.parents:
        path = path.parent
        try:
            path.rmdir()
        except OSError:  # not empty: another run's, or made meanwhile
            return


def without_resume(overrides: Iterable[str]) -> list[str]:
    """Overrides that say what a run is: `resume=` only says where it continues from."""
    return sorted(str(o) for o in overrides if str(o).split("=", 1)[0] not in RESUME_KEYS)


def run_identity(cfg: DictConfig, overrides: Iterable[str]) -> dict[str, Any]:
    """What makes two starts the same run: method, prompt, seed and the other overrides."""
    return {"experiment": cfg.get("experiment_name"), "prompt": cfg.get("prompt"), "seed": cfg.get("seed"), "overrides": without_resume(overrides)}


def _identity_of(record: Mapping[str, Any]) -> dict[str, Any]:
    return {"experiment": record.get("experiment"), "prompt": record.get("prompt"), "seed": record.get("seed"), "overrides": without_resume(record.get("overrides", []))}


def _alive(record: Mapping[str, Any]) -> bool:
    """Whether the process a `running` record names still runs (on this host; not a zombie)."""
    pid = record.get("pid")
    if record.get("status") != "running" or record.get("host") != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _empty_log(path: Path) -> bool:
    """Hydra's job log, which it opens in the run folder before `main` runs: no file of a run yet."""
    return path.suffix == ".log" and path.is_file() and path.stat().st_size == 0


def check_run_dir(run_dir: str | os.PathLike, identity: Mapping[str, Any], continuing: bool, new_folder: str = "hydra.run.dir") -> dict[str, Any]:
    """Raise ValueError (one line naming the folder) unless RUN_DIR is empty, or holds this same run
    (`identity`, see `run_identity`) and this start continues it (`continuing`: `resume=`, or a
    requeued sweep job) while no live process runs there; `new_folder` is the setting the line
    suggests changing. Returns the folder's run record ({}: none)."""
    path = _absolute(run_dir)
    if not path.is_dir() or not [p for p in path.iterdir() if not _empty_log(p)]:
        return {}
    record = read_record(path)
    folder = repr(str(path))
    if not record:
        raise ValueError(f"run directory {folder} is not empty and holds no run record (run.json): pick a new {new_folder}")
    if _alive(record):
        raise ValueError(f"run directory {folder} is in use by a running process (pid {record['pid']}): wait for it to end, or pick a new {new_folder}")
    theirs = _identity_of(record)
    ours = dict(identity)
    if record.get("experiment") is None:  # a record from before identities: its overrides say it all
        theirs = {**theirs, **{key: ours[key] for key in ("experiment", "prompt", "seed")}}
    if theirs == ours:
        if continuing:
            return record
        raise ValueError(f"run directory {folder} already holds this run ({record.get('status')}): add resume=auto to continue it, or pick a new {new_folder} to start again")
    same = all(theirs[key] == ours[key] for key in ("experiment", "prompt", "seed"))
    what = f"{theirs['experiment']}, prompt={theirs['prompt']!r}, seed={theirs['seed']}" + (", other overrides" if same else "")
    raise ValueError(f"run directory {folder} holds another run ({what}): continue that one with its own command and resume=auto, or pick a new {new_folder} for this one")


def write_hydra_files(run_dir: str | os.PathLike, cfg: DictConfig) -> None:
    """RUN_DIR/.hydra/{config,hydra,overrides}.yaml, as Hydra writes them, once the folder is this
    run's (inside a Hydra app only)."""
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.instance().cfg
    folder = Path(run_dir) / ".hydra"
    for name, node in (("config.yaml", cfg), ("hydra.yaml", hydra_cfg), ("overrides.yaml", hydra_cfg.hydra.overrides.task)):
        with atomic_path(folder / name) as tmp:
            tmp.write_text(OmegaConf.to_yaml(node))
