"""Pieces every bundled prior's training shares: the loss weight per timestep, the learning-rate
schedule, new words' embeddings, the EMA of the weights and the checkpointed state of a run."""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from framework.utils.atomic import atomic_path


def loss_weights(alphas_cumprod: torch.Tensor, min_snr_gamma: float, x0_weight_floor: float) -> torch.Tensor:
    """Per-timestep weights of the v loss: min-SNR-gamma on the x0 error, bounded below by
    `x0_weight_floor` (|v error|^2 = (snr + 1) |x0 error|^2)."""
    snr = alphas_cumprod / (1 - alphas_cumprod)
    return snr.clamp(max=min_snr_gamma).clamp(min=x0_weight_floor) / (snr + 1)


def cosine_learning_rate(step: int, lr: float, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up, then a cosine fall to a tenth of `lr` at `total_steps`."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train_only_rows(embedding: torch.nn.Parameter, rows: list[int]) -> None:
    """With the text encoder frozen, the embeddings of new words (`rows`) still learn: every other
    row's gradient is zeroed (and the embedding gets no weight decay, so those rows stay put)."""
    trainable = torch.zeros(embedding.shape[0], 1, device=embedding.device)
    trainable[rows] = 1.0
    embedding.requires_grad_(True)
    embedding.register_hook(lambda grad: grad * trainable)


@torch.no_grad()
def update_ema(ema: list[torch.Tensor], params: list[torch.nn.Parameter], step: int, max_decay: float) -> None:
    """Move the EMA towards the live weights; the decay ramps up over the first steps."""
    decay = min(max_decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)


class TrainingRun:
    """What a prior's training script checkpoints and resumes: named modules, their EMA, the
    optimiser, the data generator, the step and the command history. `save` writes it atomically;
    `restore` reads it back (architecture checked), so a rerun of the same command continues
    exactly."""

    def __init__(self, path: Path, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer, generator: torch.Generator, architecture: dict) -> None:
        self.path = path
        self.modules = modules
        self.params = [p for module in modules.values() for p in module.parameters() if p.requires_grad]
        self.ema = [p.detach().clone() for p in self.params]
        self.optimizer = optimizer
        self.generator = generator
        self.architecture = architecture
        self.step = 0
        self.history: list[str] = []

    def credit(self, command: str, export_only: bool) -> str:
        """The command the weights are credited to: this one, added to the history when it trains
        (once: a rerun that resumes is the same command), or, for an export alone, the last
        command that trained them."""
        if not export_only and self.history[-1:] != [command]:
            self.history.append(command)
        if export_only and self.history:
            return self.history[-1]
        return command

    def restore(self, device: torch.device) -> bool:
        """Load the checkpoint if there is one; True if it did."""
        if not self.path.exists():
            return False
        state = torch.load(self.path, map_location=device, weights_only=True)
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
        print(f"resumed from {self.path} at step {self.step}")
        return True

    def save(self) -> None:
        record: dict = {name: module.state_dict() for name, module in self.modules.items()}
        record.update(optimizer=self.optimizer.state_dict(), ema=self.ema, generator=self.generator.get_state(), step=torch.tensor(self.step), history=self.history, architecture=self.architecture)
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
