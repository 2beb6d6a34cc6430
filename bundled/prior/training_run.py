"""What every bundled prior's training script shares around its own training step: the flags that
stop, resume and export a run, the checkpointed state (modules, their EMA, the optimiser, the data
generator, the step, the command history and the device) and the loop that checkpoints it."""

from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Mapping

import torch
from tqdm import tqdm

from bundled.prior.training import update_ema
from framework.utils.atomic import atomic_path
from framework.utils.devices import default_device


def add_run_arguments(
    parser: argparse.ArgumentParser,
    *,
    work_dir: str,
    export_dir: Path | None,
    steps: int,
    batch_size: int,
    lr: float,
    warmup_steps: int,
    checkpoint_every_steps: int | None = None,
    export_dir_note: str = "",
) -> None:
    """The flags every prior's training has, with the script's defaults: where it works and
    exports, how long and how fast it trains, the seed and device, and when it checkpoints, stops
    and exports. Checkpoints come every --checkpoint-minutes, or every --checkpoint-every steps
    when `checkpoint_every_steps` is given (its default)."""
    parser.add_argument("--work-dir", type=Path, default=Path(work_dir), help="its checkpoint and cached renders: the same command resumes from them")
    parser.add_argument("--export-dir", type=Path, default=export_dir, help=f"where the EMA weights go when the last step is done{export_dir_note}")
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch-size", type=int, default=batch_size, help="images (point clouds) per step")
    parser.add_argument("--lr", type=float, default=lr, help="peak learning rate (linear warm-up, then a cosine fall to a tenth)")
    parser.add_argument("--warmup-steps", type=int, default=warmup_steps)
    parser.add_argument("--ema-decay", type=float, default=0.998, help="the exported weights are this EMA of the trained ones")
    parser.add_argument("--seed", type=int, default=0)
    if checkpoint_every_steps is None:
        parser.add_argument("--checkpoint-minutes", type=float, default=5.0, help="minutes between checkpoints")
    else:
        parser.add_argument("--checkpoint-every", type=int, default=checkpoint_every_steps, help="steps between checkpoints")
    parser.add_argument("--stop-at-step", type=int, default=None, help="checkpoint and stop early (train in chunks); rerun to go on")
    parser.add_argument("--time-limit-minutes", type=float, default=None, help="checkpoint and stop after this long; rerun to go on")
    parser.add_argument("--export-only", action="store_true", help="write the EMA weights of the checkpoint and stop")
    parser.add_argument("--device", default=str(default_device()))


def require_positive(parser: argparse.ArgumentParser, args: argparse.Namespace, *flags: str) -> None:
    """One line naming the first of `flags` (attribute names) that is not positive."""
    for flag in flags:
        if getattr(args, flag) <= 0:
            parser.error(f"--{flag.replace('_', '-')}={getattr(args, flag)} must be positive")


def check_run_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The flags of `add_run_arguments` in range: one line naming the first that is not."""
    require_positive(parser, args, "steps", "batch_size", "checkpoint_every" if hasattr(args, "checkpoint_every") else "checkpoint_minutes")
    if args.lr < 0 or args.warmup_steps < 0:
        parser.error(f"--lr={args.lr} and --warmup-steps={args.warmup_steps} must be 0 or more")
    if not 0.0 <= args.ema_decay < 1.0:
        parser.error(f"--ema-decay={args.ema_decay} must be in [0, 1)")
    if args.stop_at_step is not None and args.stop_at_step <= 0:
        parser.error(f"--stop-at-step={args.stop_at_step} must be positive")
    if args.time_limit_minutes is not None and args.time_limit_minutes < 0:
        parser.error(f"--time-limit-minutes={args.time_limit_minutes} must be 0 or more")


def exported_history(folder: Path) -> list[str]:
    """The commands that trained the exported prior in `folder` (its provenance.json's history, or
    its one command; none without a provenance)."""
    provenance = folder / "provenance.json"
    if not provenance.is_file():
        return []
    record = json.loads(provenance.read_text())
    return list(record.get("history", [record["command"]] if "command" in record else []))


class TrainingRun:
    """What a prior's training script checkpoints and resumes. `save` writes it atomically;
    `restore` reads it back (architecture checked), so a rerun of the same command continues
    exactly; `train` runs the script's step until the run is done or told to stop."""

    def __init__(self, path: Path, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer, generator: torch.Generator, architecture: dict, device: torch.device) -> None:
        self.path = path
        self.modules = modules
        self.params = [p for module in modules.values() for p in module.parameters() if p.requires_grad]
        self.ema = [p.detach().clone() for p in self.params]
        self.optimizer = optimizer
        self.generator = generator
        self.architecture = architecture
        self.device = device
        self.trained_on = str(device)
        self.step = 0
        self.history: list[str] = []

    def restore(self, required: bool = False) -> bool:
        """Load the checkpoint if there is one; True if it did. `required` (an export alone):
        no checkpoint is a one-line error."""
        if not self.path.exists():
            if required:
                raise SystemExit(f"--export-only: no checkpoint at {self.path}")
            return False
        state = torch.load(self.path, map_location=self.device, weights_only=True)
        if not isinstance(state, dict) or "architecture" not in state:
            raise SystemExit(f"{self.path} is not a training checkpoint of this version (it records no architecture): use another --work-dir")
        if state["architecture"] != self.architecture:
            raise SystemExit(f"{self.path} was trained with architecture {state['architecture']}: use another --work-dir")
        if len(state["ema"]) != len(self.ema):
            raise SystemExit(f"{self.path} trained {len(state['ema'])} weight tensors, this command trains {len(self.ema)} (a module frozen or not): use the same options or another --work-dir")
        saved_groups, groups = len(state["optimizer"]["param_groups"]), len(self.optimizer.param_groups)
        if saved_groups != groups:
            raise SystemExit(f"{self.path} was optimised in {saved_groups} parameter group(s), this version of the script uses {groups}: use another --work-dir")
        for name, module in self.modules.items():
            module.load_state_dict(state[name])
        self.optimizer.load_state_dict(state["optimizer"])
        for e, saved in zip(self.ema, state["ema"]):
            e.copy_(saved)
        self.generator.set_state(state["generator"].cpu())
        self.step = int(state["step"])
        self.history = list(state["history"])
        self.trained_on = state.get("device", self.trained_on)
        print(f"resumed from {self.path} at step {self.step}")
        return True

    def reset_ema(self) -> None:
        """The EMA starts at the live weights (after they were loaded from somewhere else)."""
        self.ema = [p.detach().clone() for p in self.params]

    def credit(self, command: str, export_only: bool) -> str:
        """The command the weights are credited to: this one, added to the history when it trains
        (once: a rerun that resumes is the same command), or, for an export alone, the last
        command that trained them."""
        if export_only:
            return self.history[-1] if self.history else command
        self.trained_on = str(self.device)
        if self.history[-1:] != [command]:
            self.history.append(command)
        return command

    def provenance(self, command: str, args: argparse.Namespace) -> dict:
        """What every exported prior's provenance.json starts with (the script adds its own)."""
        return {"command": command, "history": self.history, "seed": args.seed, "steps": self.step, "batch_size": args.batch_size, "device": self.trained_on}

    def save(self) -> None:
        record: dict = {name: module.state_dict() for name, module in self.modules.items()}
        record.update(optimizer=self.optimizer.state_dict(), ema=self.ema, generator=self.generator.get_state(), step=torch.tensor(self.step), history=self.history, architecture=self.architecture, device=self.trained_on)
        with atomic_path(self.path) as tmp:
            torch.save(record, tmp)

    def optimise(self, loss: torch.Tensor, max_decay: float, max_grad_norm: float = 1.0, clip_each_group: bool = False) -> None:
        """One optimiser step on `loss` (gradients clipped to `max_grad_norm`, all together or each
        optimiser parameter group on its own), counted, then the EMA."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for params in [group["params"] for group in self.optimizer.param_groups] if clip_each_group else [self.params]:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        self.optimizer.step()
        self.step += 1
        update_ema(self.ema, self.params, self.step, max_decay)

    def train(
        self,
        step: Callable[[], Mapping[str, object]],
        total_steps: int,
        description: str,
        *,
        stop_at_step: int | None = None,
        time_limit_minutes: float | None = None,
        checkpoint_minutes: float | None = None,
        checkpoint_every: int | None = None,
    ) -> bool:
        """Call `step` (one training step: it calls `optimise` once and returns what the progress
        bar shows) until `total_steps`, or until `stop_at_step` or `time_limit_minutes`. Checkpoints
        every `checkpoint_minutes` or `checkpoint_every` steps, and where it stops. True when the
        last step is done: the weights are ready to export."""
        stop = total_steps if stop_at_step is None else min(total_steps, stop_at_step)
        started = last_save = time.monotonic()
        with tqdm(total=total_steps, initial=self.step, desc=description, unit="step") as bar:
            while self.step < stop:
                if time_limit_minutes is not None and time.monotonic() - started > 60 * time_limit_minutes:
                    self.save()
                    print(f"time limit reached: stopped at step {self.step}")
                    return False
                shown = step()
                bar.update(1)
                if self.step % 10 == 0:  # reading a loss waits for the GPU: not every step
                    bar.set_postfix({name: f"{value.item():.4f}" if isinstance(value, torch.Tensor) else value for name, value in shown.items()})
                if checkpoint_every is not None:
                    due = self.step % checkpoint_every == 0
                else:
                    due = checkpoint_minutes is not None and time.monotonic() - last_save > 60 * checkpoint_minutes
                if due or self.step == stop:
                    self.save()
                    last_save = time.monotonic()
        return self.step == total_steps

    @contextmanager
    def ema_weights(self) -> Iterator[None]:
        """The EMA weights in place of the live ones inside the block (to export them)."""
        with torch.no_grad():
            live = [p.detach().clone() for p in self.params]
            for p, e in zip(self.params, self.ema):
                p.copy_(e)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, saved in zip(self.params, live):
                    p.copy_(saved)
