"""The base generation LightningModule: camera batch -> render -> guidance and losses -> one loss.

It is composed from Hydra-built parts (representation, material, background, renderer,
guidance, losses) and holds no method-specific logic; methods that need their own step logic
subclass it in `experiments/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from framework.cameras.camera import CameraBatch
from framework.guidance.sds import ScoreDistillation
from framework.schedules import as_scalar, value_at
from framework.utils.images import image_grid, save_png, to_uint8, write_video
from framework.utils.nonfinite import NonFiniteGuard, is_finite


class GenerationSystem(pl.LightningModule):
    """Args:
        representation: the 3D representation (an nn.Module the renderer understands).
        material, background, renderer: see `framework/representations` and `framework/renderers`.
        guidance: the score-distillation guidance (kept out of the checkpoint).
        losses: name -> callable(render) -> scalar, weighted by `loss_weights[name]`.
        loss_weights: name -> number, Schedule or [[step, value], ...]; "sds" weighs the guidance.
        optimizer: a partial optimiser class (`_partial_: true`) taking param groups.
        learning_rates: parameter-name prefix -> learning rate (the longest matching prefix wins).
        save_dir: where validation grids and the turntable go (the run's `save/`).
        max_bad_steps: a step whose loss or gradients are NaN/Inf is skipped; this many in a row
            stop the run (`NonFiniteGuard`).
    """

    def __init__(
        self,
        representation: nn.Module,
        material: nn.Module,
        background: nn.Module,
        renderer: nn.Module,
        guidance: ScoreDistillation,
        losses: Mapping[str, Callable[[dict[str, Tensor]], Tensor]],
        loss_weights: Mapping[str, Any],
        optimizer: Callable[..., torch.optim.Optimizer],
        learning_rates: Mapping[str, float],
        save_dir: str | Path = "save",
        max_bad_steps: int = 20,
    ) -> None:
        super().__init__()
        self.representation = representation
        self.material = material
        self.background = background
        self.renderer = renderer
        self.guidance = guidance  # not an nn.Module: frozen weights stay out of checkpoints
        self.losses = dict(losses)
        self.loss_weights = {name: as_scalar(weight) for name, weight in loss_weights.items()}
        unknown = set(self.loss_weights) - set(self.losses) - {"sds"}
        if unknown:
            raise ValueError(f"loss_weights names {sorted(unknown)} but the losses are {sorted(self.losses)} (and 'sds')")
        self.optimizer_factory = optimizer
        self.learning_rates = dict(learning_rates)
        self.save_dir = Path(save_dir)
        self._turntable: list[Tensor] = []
        self.nonfinite = NonFiniteGuard(max_bad_steps)
        self._loss_finite = True

    def check_trainer(self, trainer: pl.Trainer) -> None:
        """Raise ValueError if this method cannot run under `trainer` (the launcher asks before
        `fit` starts any process, so a refusal is one line from one process)."""

    # --- rendering ------------------------------------------------------------------------------
    def render(self, cameras: CameraBatch, training: bool) -> dict[str, Tensor]:
        shading = self.material.sample_shading(cameras, training)
        return self.renderer(self.representation, self.material, self.background, cameras, shading, training)

    def transfer_batch_to_device(self, batch: CameraBatch, device: torch.device, dataloader_idx: int) -> CameraBatch:
        return batch.to(device)

    # --- training -------------------------------------------------------------------------------
    def compute_losses(self, render: dict[str, Tensor], cameras: CameraBatch, step: int) -> dict[str, Tensor]:
        """Every weighted term (`loss_<name>`), the total (`loss`) and guidance diagnostics."""
        guidance_out = self.guidance(render["rgb"], cameras, step)
        terms = {"sds": guidance_out.pop("loss_sds")}
        for name, loss_fn in self.losses.items():
            if value_at(self.loss_weights.get(name, 0.0), step) != 0.0:
                terms[name] = loss_fn(render)
        total = sum(value_at(self.loss_weights.get(name, 1.0 if name == "sds" else 0.0), step) * value for name, value in terms.items())
        out = {f"loss_{name}": value for name, value in terms.items()}
        out.update(guidance_out)
        out["loss"] = total
        return out

    def training_step(self, batch: CameraBatch, batch_idx: int) -> Tensor:
        step = self.global_step
        self.renderer.update(self.representation, step)
        render = self.render(batch, training=True)
        losses = self.compute_losses(render, batch, step)
        self.log_dict({f"train/{k}": v.detach().float() for k, v in losses.items()}, prog_bar=False)
        self.log("loss", losses["loss"].detach(), prog_bar=True, logger=False)
        self.log("train/resolution", float(batch.height))
        self._loss_finite = is_finite(losses["loss"])
        return losses["loss"]

    def admit_step(self, loss_finite: bool, optimizer: torch.optim.Optimizer) -> bool:
        """Whether this step's update may be applied, once its gradients are complete; a skipped
        step leaves `optimizer` no gradients, so its `step()` changes nothing. Logs
        `train/skipped_steps`. Every rank reaches the same verdict."""
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        admitted = self.nonfinite.admit(self.global_step, loss_finite, parameters, self.trainer.strategy.reduce_boolean_decision)
        self.log("train/skipped_steps", float(self.nonfinite.skipped_steps))
        return admitted

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Automatic optimisation: the loss went through backward (so ranks stay in step) and the
        # update is dropped here. Manual methods call `admit_step` themselves.
        if self.automatic_optimization:
            self.admit_step(self._loss_finite, optimizer)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups: dict[str, list[nn.Parameter]] = {}
        for name, parameter in self.named_parameters():
            if not parameter.requires_grad:
                continue
            matches = [prefix for prefix in self.learning_rates if name.startswith(prefix)]
            if not matches:
                raise ValueError(f"parameter {name!r} matches no prefix of learning_rates {sorted(self.learning_rates)}")
            groups.setdefault(max(matches, key=len), []).append(parameter)
        return self.optimizer_factory([{"params": params, "lr": self.learning_rates[prefix], "name": prefix} for prefix, params in groups.items()])

    # --- randomness in checkpoints --------------------------------------------------------------
    def _generators(self) -> dict[str, torch.Generator]:
        found = {name or "system": module.generator for name, module in self.named_modules() if isinstance(getattr(module, "generator", None), torch.Generator)}
        found["guidance"] = self.guidance.generator
        return found

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["generators"] = {name: g.get_state() for name, g in self._generators().items()}
        checkpoint["nonfinite"] = self.nonfinite.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for name, generator in self._generators().items():
            if name in checkpoint.get("generators", {}):
                generator.set_state(checkpoint["generators"][name])
        if "nonfinite" in checkpoint:
            self.nonfinite.load_state_dict(checkpoint["nonfinite"])

    # --- validation and the turntable -----------------------------------------------------------
    def _panels(self, render: dict[str, Tensor]) -> list[Tensor]:
        panels = [render["rgb"]]
        if "normal" in render:
            panels.append((render["normal"] * 0.5 + 0.5) * render["opacity"] + (1 - render["opacity"]))
        panels.append(render["opacity"].expand(*render["opacity"].shape[:-1], 3))
        return panels

    def validation_step(self, batch: CameraBatch, batch_idx: int) -> None:
        with torch.no_grad():
            render = self.render(batch, training=False)
        if not self.trainer.is_global_zero:
            return
        grid = image_grid(torch.stack(self._panels(render)).cpu())
        save_png(self.save_dir / f"val_step{self.global_step:06d}.png", grid)
        for logger in self.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="validation", images=[to_uint8(grid)], step=self.global_step)

    def on_test_epoch_start(self) -> None:
        self._turntable = []

    def test_step(self, batch: CameraBatch, batch_idx: int) -> None:
        with torch.no_grad():
            render = self.render(batch, training=False)
        self._turntable.append(torch.cat(self._panels(render)[:2], dim=2).cpu())

    def on_test_epoch_end(self) -> None:
        if not self.trainer.is_global_zero:
            self._turntable = []
            return
        frames = to_uint8(torch.cat(self._turntable))
        path = write_video(self.save_dir / "turntable.mp4", frames)
        for logger in self.loggers:
            if hasattr(logger, "log_video"):
                logger.log_video(key="turntable", videos=[str(path)], step=self.global_step, format=["mp4"])
        self._turntable = []
