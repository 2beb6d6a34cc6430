"""The Hydra entry point: compose the config, build the parts, fit (or predict, for a
feed-forward method), render the turntable, export.

    python -m framework.launch experiment=dreamfusion prompt="a red cube" [seed=N]
        [trainer.max_steps=N] [resume=<ckpt>|auto] [init_from=<ckpt>] [backend=auto|torch|cuda]
        [guidance=<name>] [+guidance@guidance_slots.<name>=<option>] [image=<file>] [max_bad_steps=K]

`init_from=<ckpt>` starts this run where another run's checkpoint stopped (weights, stage, step,
optimisers), in this run's directory and with this run's settings: e.g. one coarse result, swept
over the settings of a later stage.

`resume=auto` continues from the run's own RUN_DIR/ckpts/last.ckpt when it exists and starts fresh
otherwise: the same command run again in the same run directory (`hydra.run.dir=...`, or a requeued
sweep job, whose directory is fixed by its number and values) picks up where a killed run stopped.

A run directory belongs to one run (framework/utils/run_dirs.py): a start in a folder holding
another run's files is refused, and so is a start of the same run there without `resume=`.

It prints the exports it wrote (GLB, PLY, turntable video), then, last, the run directory. Bad input
exits 2 with one line, `error: ...`, on stderr (Hydra's composition errors too, unless
HYDRA_FULL_ERROR=1), checked before any weights load and leaving no run folder behind; a run
stopped by NaN/Inf steps or by running out of memory exits 1 the same way.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import re
import sys
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning_fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image

import framework.distributed  # noqa: F401  (registers trainer.strategy=ddp_unwrapped)
from framework.guidance.estimators import build_estimator
from framework.guidance.slot import GuidanceSlot, split_slot_config
from framework.schedules import value_at
from framework.stages import resolution_schedule
from framework.utils.checkpoint_io import AtomicCheckpointIO, RestoreGuard, read_checkpoint
from framework.utils.devices import default_device
from framework.utils.errors import RunStopped
from framework.utils.run_dirs import check_run_dir, discard_run_dir, run_identity, unique_run_dir, write_hydra_files
from framework.utils.run_record import RunRecord, sweep_group
from framework.utils.settings import check_settings

MAX_PROMPT_CHARS = 300
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
BAD_INPUT = (InstantiationException, ValueError, FileNotFoundError)  # exit 2
_task_started = False  # whether Hydra got as far as `main`: errors before it are about the run folder


def slugify(text: str, max_length: int = 60) -> str:
    """A folder name for a prompt: lowercase words joined by dashes."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")
    return slug[:max_length].rstrip("-") or "untitled"


def wandb_offline() -> bool:
    """Offline unless the user asked for online mode or has logged in."""
    if os.environ.get("WANDB_MODE", "").lower() == "online":
        return False
    if os.environ.get("WANDB_API_KEY"):
        return False
    netrc = Path.home() / ".netrc"
    return not (netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"))


OmegaConf.register_new_resolver("slug", slugify, replace=True)
OmegaConf.register_new_resolver("wandb_offline", wandb_offline, replace=True)
OmegaConf.register_new_resolver("sweep_group", sweep_group, replace=True)  # one wandb group per sweep
OmegaConf.register_new_resolver("sum", lambda *values: sum(values), replace=True)  # stage lengths -> max_steps
# ${choose:${guidance.latent},400,0}: a value that depends on a fact about the prior.
OmegaConf.register_new_resolver("choose", lambda condition, if_true, if_false: if_true if condition else if_false, replace=True)


def run_name(prompt: object, image: object) -> str:
    """What names a run's folder: the prompt, else the reference image's file name."""
    if prompt is not None and str(prompt).strip():
        return str(prompt)
    return Path(str(image)).stem if image is not None else ""


def package_dir(package: str, relative: str) -> str:
    """A folder shipped inside an installed package (the bundled prior's weights)."""
    return str(importlib.resources.files(package) / relative)


def experiment_names() -> str:
    """The methods there are (conf/experiment/*.yaml), for `--help`."""
    return "|".join(sorted(path.stem for path in (CONF_DIR / "experiment").glob("*.yaml")))


OmegaConf.register_new_resolver("run_name", run_name, replace=True)
OmegaConf.register_new_resolver("package_dir", package_dir, replace=True)
OmegaConf.register_new_resolver("experiments", experiment_names, replace=True)
# Cached: Hydra resolves hydra.run.dir more than once, and the folder is made on the first.
OmegaConf.register_new_resolver("unique_run_dir", unique_run_dir, replace=True, use_cache=True)


def resolve_backend(backend: str) -> torch.device:
    """backend=auto|torch|cuda -> the device the run uses."""
    if backend not in ("auto", "torch", "cuda"):
        raise ValueError(f"backend={backend!r}: expected auto, torch or cuda")
    if backend == "cuda" and not torch.cuda.is_available():
        raise ValueError("backend=cuda but CUDA is not available on this machine: use backend=auto or backend=torch")
    return torch.device("cpu") if backend == "torch" else default_device()


def job_device(device: torch.device, gpu_per_job: bool) -> torch.device:
    """With gpu_per_job=true, multirun job N uses GPU N mod (GPU count): joblib and submitit's local
    executor do not pin GPUs per job, and their reused workers cannot switch CUDA_VISIBLE_DEVICES."""
    if not gpu_per_job or device.type != "cuda" or not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return device
    return torch.device("cuda", HydraConfig.get().job.num % torch.cuda.device_count())


def check_prompt(prompt: object, image: object = None) -> str | None:
    """The prompt, required unless an image is given (image-to-3D)."""
    text = str(prompt) if prompt is not None else ""
    if not text.strip():
        if image is not None and prompt is None:
            return None
        raise ValueError(f"prompt={text!r} is empty: pass prompt=\"a red cube\" (or image=<file> for image-to-3D)")
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(f"prompt is {len(text)} characters long: at most {MAX_PROMPT_CHARS} are allowed")
    return text


def check_image(image: object) -> None:
    """`image=<file>` (the reference view of image-to-3D) must be an image file PIL can read;
    checked before any weight loads."""
    if image is None:
        return
    try:
        with Image.open(str(image)) as picture:
            picture.verify()
    except (OSError, SyntaxError, ValueError) as error:  # PIL reports broken files as any of these
        raise ValueError(f"image={str(image)!r} is not a readable image file ({type(error).__name__})") from None


def resolve_resume(cfg: DictConfig) -> str | None:
    """The checkpoint to continue from: `resume=<ckpt>` as given; `resume=auto` the run's own last
    checkpoint when it exists, else None (a fresh start)."""
    resume = cfg.get("resume")
    if resume != "auto":
        return str(resume) if resume else None
    last = Path(OmegaConf.select(cfg, "callbacks.checkpoint.dirpath", default=str(Path(cfg.run_dir) / "ckpts"))) / "last.ckpt"
    return str(last) if last.is_file() else None


def start_checkpoint(cfg: DictConfig) -> str | None:
    """The checkpoint training starts from: this run's own (`resume=`) or, for a fresh start,
    another run's (`init_from=`). It must be a readable checkpoint of this method, checked here
    (a quick look: its tensors are mapped, not read) so that a wrong file fails with one line
    before any weights load."""
    resume, init_from = resolve_resume(cfg), cfg.get("init_from")
    for name, path in (("resume", resume), ("init_from", init_from)):
        if path and not Path(str(path)).is_file():
            raise FileNotFoundError(f"{name}={str(path)!r}: no such checkpoint file")
    if resume and init_from and cfg.get("resume") != "auto":
        raise ValueError("give resume= (continue this run) or init_from= (start from another run), not both")
    start = str(resume) if resume else (str(init_from) if init_from else None)
    if start is not None:
        step = read_checkpoint(start, cfg.get("experiment_name"), mmap=True).get("global_step")
        max_steps = OmegaConf.select(cfg, "trainer.max_steps")
        if not resume and isinstance(step, int) and max_steps is not None and step >= int(max_steps):
            # Lightning would skip training and with it the exports: say so instead.
            raise ValueError(f"init_from={str(init_from)!r} stopped at step {step} and trainer.max_steps={max_steps}: nothing is left to train (give a stage more steps)")
    return start


@dataclass(frozen=True)
class Start:
    """What the checks before any weights load settled: the device and the checkpoint to start from."""

    device: torch.device
    checkpoint: str | None


def apply_image_mode(cfg: DictConfig) -> None:
    """With image= given, an experiment's `image_to_3d` node replaces the top-level nodes it names
    (DreamGaussian's image-to-3D: the novel-view guidance and the reference-view losses in place of
    the text prior's); without an image, or without that node, nothing changes."""
    nodes = cfg.get("image_to_3d")
    if cfg.get("image") is None or not nodes:
        return
    with open_dict(cfg):
        for key in list(nodes):
            cfg[key] = nodes[key]


def check_estimators(cfg: DictConfig) -> None:
    """Every estimator named by a slot (`guidance.estimator=...`) or a stage's slot override is
    known and takes its options: built once, unbound, before any weights load."""
    nodes = [cfg.get("guidance"), *(cfg.get("guidance_slots") or {}).values()]
    specs = [node.get("estimator") for node in nodes if node is not None]
    stages = cfg.system.get("stages") if cfg.get("system") is not None else None
    for stage in (stages.values() if isinstance(stages, DictConfig) else []):
        for overrides in ((stage or {}).get("slots") or {}).values():
            specs.append((overrides or {}).get("estimator"))
    for spec in specs:
        if isinstance(spec, str) or (isinstance(spec, DictConfig) and "_target_" not in spec):
            build_estimator(OmegaConf.to_container(spec) if isinstance(spec, DictConfig) else spec)


def preflight(cfg: DictConfig) -> Start:
    """The experiment's image mode (`apply_image_mode`), then every check that needs no weights,
    before any load: prompt, image, settings (a whole-number seed, finite numbers everywhere),
    estimators, backend, the checkpoint to start from."""
    apply_image_mode(cfg)
    check_prompt(cfg.prompt, cfg.get("image"))
    check_image(cfg.get("image"))
    check_settings(cfg)
    check_estimators(cfg)
    device = job_device(resolve_backend(cfg.backend), cfg.get("gpu_per_job", False))
    return Start(device, start_checkpoint(cfg))


def completed_step(cfg: DictConfig, previous: dict, checkpoint: str | None) -> int | None:
    """The step at which this run already completed, when continuing it has nothing left to do
    (its record says completed and its checkpoint is at `max_steps`); else None."""
    if previous.get("status") != "completed" or checkpoint is None:
        return None
    step = read_checkpoint(checkpoint, cfg.get("experiment_name"), mmap=True).get("global_step")
    return step if isinstance(step, int) and step >= int(cfg.trainer.max_steps) else None


def out_of_memory_line(camera: pl.LightningDataModule, step: int) -> str:
    """What to lower when CUDA runs out of memory: typically at a resolution or batch-size step."""
    resolution, batch_size = int(value_at(camera.resolution, step)), int(value_at(camera.batch_size, step))
    return (
        f"CUDA out of memory at step {step}, training at resolution {resolution} with batch size {batch_size}: "
        "lower camera.resolution or camera.batch_size (each a number or [[step, value], ...])"
    )


def build_slots(cfg: DictConfig, device: torch.device) -> dict[str, GuidanceSlot]:
    """The guidance slots: `guidance` is the slot "main", `guidance_slots.<name>` the others; each
    node holds the guidance's arguments and the slot's settings (input, weight, ...)."""
    nodes = {"main": cfg.guidance} if cfg.get("guidance") is not None else {}
    nodes.update(cfg.get("guidance_slots") or {})
    slots = {}
    for name, node in nodes.items():
        arguments, settings = split_slot_config(OmegaConf.to_container(node, resolve=True))
        guidance = instantiate(arguments, device=str(device))
        generator = getattr(guidance, "generator", None)
        if name != "main" and isinstance(generator, torch.Generator) and "seed" in arguments:
            # Each slot draws its own timesteps and noise (the same seed would repeat main's draws).
            generator.manual_seed(int(arguments["seed"]) * 1_000_003 + zlib.crc32(name.encode()))
        slots[name] = GuidanceSlot(name=name, guidance=guidance, **settings)
    return slots


def build_system(cfg: DictConfig, device: torch.device) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    """The system (its guidance slots first, as ever, so seeded initialisations stay put) and
    the datamodule, whose training resolution follows the stages that declare one."""
    slots = build_slots(cfg, device)
    # Slots are objects, not config: they join the partially built system as plain arguments.
    system = instantiate(cfg.system, _partial_=True, max_bad_steps=cfg.max_bad_steps)(slots=slots)
    datamodule = instantiate(cfg.camera)
    datamodule.resolution = resolution_schedule(system.stages, datamodule.resolution)
    return system, datamodule


def build_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    """`callbacks.*`; checkpoints keep one `last.ckpt` a run (never `last-v1.ckpt`): a requeued job
    that starts again overwrites its own files."""
    callbacks = []
    for node in cfg.get("callbacks", {}).values():
        one_last = str(node.get("_target_", "")).endswith("ModelCheckpoint")
        callbacks.append(instantiate(node, **({"enable_version_counter": False} if one_last else {})))
    return callbacks


def run(cfg: DictConfig, record: RunRecord | None = None, start: Start | None = None) -> Path:
    """Fit, test (turntable) and export; `record` (launch's RUN_DIR/run.json) also gives the loggers
    the run config and wandb its kept run id; `start` is `preflight(cfg)` when already checked."""
    run_dir = Path(cfg.run_dir)
    start = start or preflight(cfg)
    device, resume = start.device, start.checkpoint
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    system, datamodule = build_system(cfg, device)
    checkpoint_io = AtomicCheckpointIO(cfg.get("experiment_name"))
    restore = RestoreGuard(checkpoint_io)
    callbacks = [*build_callbacks(cfg), restore]
    if record is not None and OmegaConf.select(cfg, "logger.wandb") is not None:
        cfg.logger.wandb.id = record.wandb_id
    loggers = [instantiate(c) for c in cfg.get("logger", {}).values()]
    if record is not None:
        callbacks.append(record)
        for logger in loggers:
            logger.log_hyperparams(record.run_config(cfg))
    trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        **({"devices": [device.index]} if device.index is not None else {}),
        default_root_dir=str(run_dir),
        plugins=[checkpoint_io],
    )
    system.check_trainer(trainer)
    try:
        if system.feed_forward:
            trainer.predict(system, datamodule=datamodule, return_predictions=False)
        else:
            trainer.fit(system, datamodule=datamodule, ckpt_path=resume)
    except torch.cuda.OutOfMemoryError as error:
        raise RunStopped(out_of_memory_line(datamodule, trainer.global_step)) from error
    except Exception as error:  # a checkpoint of this method that does not fit: one line too
        mismatch = restore.explain(error, cfg.get("experiment_name"))
        if mismatch is None:
            raise
        raise mismatch from error
    trainer.test(system, datamodule=datamodule, verbose=False)
    return run_dir


def _quiet_libraries() -> None:
    for name in ("diffusers", "transformers", "pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="diffusers|transformers|pytorch_lightning|lightning_fabric")
    os.environ.setdefault("WANDB_SILENT", "true")
    # diffusers and transformers reset their loggers on import; these are read at that moment.
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def error_line(error: BaseException) -> str:
    """The one line a failed run prints and records: input errors as they are, anything else (the
    cause of a failed instantiation included) with its type."""
    if isinstance(error, (ValueError, FileNotFoundError, RunStopped)):
        text = str(error)
    else:
        cause = (error.__cause__ or error) if isinstance(error, InstantiationException) else error
        text = f"{type(cause).__name__}: {cause}"
    lines = text.strip().splitlines()
    return lines[0] if lines else type(error).__name__


@contextmanager
def _log_elsewhere(run_dir: Path) -> Iterator[None]:
    """Log without the job's log file inside `run_dir` (Hydra opens it there before `main` runs)."""
    root = logging.getLogger()
    inside = [h for h in root.handlers if isinstance(h, logging.FileHandler) and Path(h.baseFilename).parent == run_dir]
    for handler in inside:
        root.removeHandler(handler)
    try:
        yield
    finally:
        for handler in inside:
            root.addHandler(handler)


def _fail(error: BaseException, record: RunRecord | None, multirun: bool) -> None:
    """Record and report a failed run: a multirun job's error is logged (the sweep goes on); a
    single run exits 2 on bad input, 1 when stopped (NaN streak, out of memory), both with one line;
    anything else is raised."""
    line = error_line(error)
    if record is not None:
        record.finish("failed" if isinstance(error, Exception) else "interrupted", line)
    if multirun and isinstance(error, Exception):
        logging.getLogger(__name__).error("job %s failed: %s", HydraConfig.get().job.num, line)
        return
    if isinstance(error, (*BAD_INPUT, RunStopped)):
        print(f"error: {line}", file=sys.stderr)
        sys.exit(2 if isinstance(error, BAD_INPUT) else 1)
    raise error


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    """One run, recorded in RUN_DIR/run.json, in a folder that is this run's alone.

    In order: the folder (another run's is refused and left untouched), the checks that need no
    weights (`preflight`), then the run. A single run refused for bad input exits 2 with one line
    and leaves no folder it made; a failed multirun job is logged and recorded in its folder (the
    sweep's report lists it; not in a folder of another run), and returns, so the sweep's other
    jobs still run."""
    global _task_started
    _task_started = True
    _quiet_libraries()
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    overrides = list(hydra_cfg.overrides.task)
    run_dir = Path(os.path.abspath(cfg.run_dir))
    identity = run_identity(cfg, overrides)
    resume = cfg.get("resume")
    # Continuing this run here: resume=auto or one of this folder's checkpoints, or a requeued sweep job.
    continuing = multirun or resume == "auto" or (bool(resume) and run_dir in Path(os.path.abspath(str(resume))).parents)
    try:
        # DDP starts this script again for every other rank, in rank 0's folder: rank 0 checked it.
        previous = check_run_dir(run_dir, identity, continuing, "hydra.sweep.dir" if multirun else "hydra.run.dir") if rank_zero_only.rank == 0 else {}
    except ValueError as error:  # another run's folder: nothing is written into it, its log included
        with _log_elsewhere(run_dir):
            _fail(error, None, multirun)
        return
    record = None
    try:
        start = preflight(cfg)
        step = completed_step(cfg, previous, start.checkpoint) if previous else None
        if step is not None:
            if rank_zero_only.rank == 0:
                print(f"nothing to do: this run already completed at step {step}")
                print(run_dir)
            return
        if rank_zero_only.rank == 0:
            write_hydra_files(run_dir, cfg)
        record = RunRecord(cfg.run_dir, overrides, resolve_resume(cfg), identity=identity)
        run_dir = run(cfg, record, start)
    except BaseException as error:
        if multirun and record is None and isinstance(error, Exception):  # refused before it began: the report still lists it
            record = RunRecord(cfg.run_dir, overrides, None, identity=identity)
        if not multirun and rank_zero_only.rank == 0 and isinstance(error, BAD_INPUT) and (record is None or record.final_step is None):
            discard_run_dir(run_dir)  # refused before training began: no folder left behind (only one this process made)
        _fail(error, record, multirun)
        return
    record.finish("completed")
    if rank_zero_only.rank == 0:  # DDP runs this script once per device
        for relative in record.data["exports"]:
            print(f"wrote {Path(run_dir) / relative}")
        print(run_dir)


def hydra_error_line(error: CompactHydraException) -> str:
    """Hydra's report of a bad override (unknown option, unknown key, unparsable) as one line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    options = getattr(error, "options", None)
    if options:  # an unknown config group option: name the ones there are
        return f"{lines[0]}; the options are {', '.join(options)}"
    return " ".join(lines) or type(error).__name__


def setup_error_line(error: OSError | ValueError) -> str:
    """What stopped Hydra before the run began, as one line: a run folder it cannot make (an
    unusable output_root or hydra.run.dir)."""
    if isinstance(error, OSError):
        reason = error.strerror or type(error).__name__
        return f"cannot make the run folder {str(error.filename)!r} ({reason}): set output_root (or hydra.run.dir / hydra.sweep.dir) to a writable folder"
    text = re.sub(r"^\w+ raised while resolving interpolation: ", "", str(error).strip())
    return text.splitlines()[0] if text else type(error).__name__


def cli() -> None:
    """`python -m framework.launch`: `main`, with Hydra's composition errors as one line too
    (HYDRA_FULL_ERROR=1 keeps Hydra's own report)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        main()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then raises instead of printing its report
    try:
        main()
    except CompactHydraException as error:
        print(f"error: {hydra_error_line(error)}", file=sys.stderr)
        sys.exit(2)
    except (OSError, ValueError) as error:
        if _task_started:
            raise
        print(f"error: {setup_error_line(error)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
