"""The base generation LightningModule: batch -> render -> guidance slots and losses -> one loss.

It is composed from Hydra-built parts and holds no method-specific logic:
- `stages` (framework/stages.py): what is active when, the conversions between stages;
- `representations`, `renderers`, `materials` (named), one `background`;
- guidance `slots` (framework/guidance/slot.py), whose trainable parts it registers, optimises
  and checkpoints (their frozen weights stay outside the module tree, so never in a checkpoint);
- `losses`: name -> callable(render, batch), each with a weight (number or schedule).

Optimisation is manual: one optimiser per learning-rate prefix, held by an `OptimizerGroup`
(gsplat's strategies need one per Gaussian parameter and replace parameters with their optimiser
state), rebuilt at every stage switch. A feed-forward method gives a `reconstructor` instead of
stages: launch then predicts instead of fitting, and the same exports and turntable follow.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from framework.cameras.batch import Batch, ReferenceView
from framework.cameras.camera import CameraBatch
from framework.distributed import UnwrappedDDPStrategy, average_gradients
from framework.guidance.condition import Condition
from framework.guidance.slot import GuidanceSlot
from framework.optimizers import OptimizerGroup
from framework.representations.background import SolidBackground
from framework.representations.particles import Particles, concatenate_renders, shown
from framework.schedules import as_scalar, value_at
from framework.stages import Stage, stage_index_at
from framework.utils.images import image_grid, save_png, to_uint8, write_video
from framework.utils.nonfinite import NonFiniteGuard, is_finite

PARAMETER_ROOTS = ("representation", "background", "material", "guidance")


class GenerationSystem(pl.LightningModule):
    """Args:
        representations, renderers, materials: name -> module; stages refer to them by name
            ("main" by default). A stage's conversion adds the representation it makes.
        background: what is composited behind the object.
        stages: name -> stage settings (`Stage` fields but the name), in order, or a list of
            `Stage`s; empty with a reconstructor.
        slots: name -> guidance slot (built by launch from `guidance` and `guidance_slots`).
        losses: name -> callable(render, batch) -> scalar.
        loss_weights: name -> number, Schedule or [[step, value], ...]; exactly one per loss.
        optimizer: a partial optimiser class (`_partial_: true`) taking param groups.
        learning_rates: parameter-name prefix -> learning rate (number or schedule) for stages
            that give none; see `Stage.learning_rates`.
        prompt: the text condition (None for image-only methods).
        reconstructor: a feed-forward model, `reconstructor(batch) -> representation` (stored
            as representations["main"]); such a method does not optimise.
        save_dir: where validation grids and the turntable go (the run's `save/`).
        max_bad_steps: a step whose loss or gradients are NaN/Inf is skipped; this many in a row
            stop the run (`NonFiniteGuard`).
    """

    def __init__(
        self,
        representations: Mapping[str, nn.Module],
        renderers: Mapping[str, nn.Module],
        materials: Mapping[str, nn.Module],
        background: nn.Module,
        stages: Mapping[str, Stage | Mapping[str, Any]] | Sequence[Stage] = (),
        slots: Mapping[str, GuidanceSlot] | None = None,
        losses: Mapping[str, Callable[[dict[str, Tensor], Batch], Tensor]] | None = None,
        loss_weights: Mapping[str, Any] | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.Adam,
        learning_rates: Mapping[str, Any] | None = None,
        prompt: str | None = None,
        reconstructor: nn.Module | None = None,
        save_dir: str | Path = "save",
        max_bad_steps: int = 20,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.representations = nn.ModuleDict(dict(representations))
        self.renderers = nn.ModuleDict(dict(renderers))
        self.materials = nn.ModuleDict(dict(materials))
        self.background = background
        self.slots = dict(slots or {})
        self.losses = dict(losses or {})
        self.loss_weights = {name: as_scalar(weight) for name, weight in (loss_weights or {}).items()}
        if set(self.loss_weights) != set(self.losses):
            unweighted, unknown = sorted(set(self.losses) - set(self.loss_weights)), sorted(set(self.loss_weights) - set(self.losses))
            raise ValueError(f"every loss needs exactly one weight: loss terms without a weight {unweighted}, weights of no loss term {unknown}")
        self.optimizer_factory = optimizer
        self.learning_rates = {prefix: as_scalar(lr) for prefix, lr in (learning_rates or {}).items()}
        self.prompt = prompt
        self.reconstructor = reconstructor
        if isinstance(stages, Mapping):
            self.stages = [stage if isinstance(stage, Stage) else Stage(name=name, **stage) for name, stage in stages.items()]
        else:
            self.stages = list(stages)
        if reconstructor is None and not self.stages:
            raise ValueError("a method needs stages to optimise, or a reconstructor (feed-forward)")
        if reconstructor is not None and self.stages:
            raise ValueError("a feed-forward method (reconstructor) declares no stages")
        if not self.stages:
            self.stages = [Stage(name="predict", steps=0)]
        self._check_stages()
        # Each stage's slots with its overrides, built once: an estimator named there is built
        # and bound now, so its trainable parts are registered before any checkpoint is loaded.
        self._stage_slots = [self._slots_with_overrides(stage) for stage in self.stages]
        self.guidance_parts = nn.ModuleDict({name: nn.ModuleDict(parts) for name, slot in self.slots.items() if (parts := slot.trainable_modules())})
        self._stage_rates = [self._rates_with_part_defaults(stage) for stage in self.stages]
        self.stage_index = 0
        self.save_dir = Path(save_dir)
        self._turntable: list[Tensor] = []
        self.nonfinite = NonFiniteGuard(max_bad_steps)
        self._white = SolidBackground((1.0, 1.0, 1.0))  # behind the reference render; a buffer, no parameter

    def _check_stages(self) -> None:
        names = [stage.name for stage in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        made = set(self.representations) | ({"main"} if self.reconstructor is not None else set())
        for stage in self.stages:
            if stage.convert is not None:
                made.add(stage.convert.target)
            for kind, key, available in (("representation", stage.representation, made), ("renderer", stage.renderer, self.renderers), ("material", stage.material, self.materials)):
                if key not in available:
                    raise ValueError(f"stage {stage.name!r}: {kind} {key!r} is not one of {sorted(available)}")
            unknown_slots = set(stage.slots or {}) - set(self.slots)
            unknown_losses = set(stage.losses or []) - set(self.losses)
            if unknown_slots or unknown_losses:
                raise ValueError(f"stage {stage.name!r}: unknown slots {sorted(unknown_slots)} / losses {sorted(unknown_losses)}; the slots are {sorted(self.slots)}, the losses {sorted(self.losses)}")

    @property
    def feed_forward(self) -> bool:
        return self.reconstructor is not None

    @property
    def stage(self) -> Stage:
        return self.stages[self.stage_index]

    @property
    def representation(self) -> nn.Module:
        """The active stage's representation."""
        return self.representations[self.stage.representation]

    def check_trainer(self, trainer: pl.Trainer) -> None:
        """Raise ValueError if this method cannot run under `trainer` (the launcher asks before
        `fit` starts any process, so a refusal is one line from one process)."""
        changing = len(self.stages) > 1 or any(stage.densification is not None for stage in self.stages)
        if changing and trainer.world_size > 1 and not isinstance(trainer.strategy, UnwrappedDDPStrategy):
            raise ValueError(
                f"{type(trainer.strategy).__name__} with {trainer.world_size} devices: this method replaces parameters while it trains "
                "(densification or a stage switch), which DDP's gradient hooks cannot follow: use trainer.strategy=ddp_unwrapped"
            )

    def setup(self, stage: str) -> None:
        self.check_trainer(self.trainer)  # also when fit is called without the launcher

    # --- stages -----------------------------------------------------------------------------------
    def stage_index_at(self, step: int) -> int:
        return stage_index_at(self.stages, step)

    def make_representation(self, index: int) -> nn.Module:
        """Run stage `index`'s conversion on the current stage's representation."""
        stage = self.stages[index]
        assert stage.convert is not None
        source = shown(self.representation)
        return stage.convert(source, lambda cameras: self.render(cameras, training=False)).to(self.device)

    def enter_stage(self, index: int) -> None:
        """Switch to stage `index`: run its conversion, then rebuild the optimisers (the
        stage-switch callback calls this at the boundary)."""
        stage = self.stages[index]
        if stage.convert is not None:
            self.representations[stage.convert.target] = self.make_representation(index)
        self.stage_index = index
        if self._trainer is not None and self.trainer.optimizers:
            group = self.trainer.optimizers[0]
            assert isinstance(group, OptimizerGroup)
            group.replace_members(self.stage_optimizers())

    def representation_named(self, name: str) -> nn.Module:
        """The representation `name`; one a later stage would make is made now from the current
        one (exports of a run stopped before that stage)."""
        if name in self.representations:
            return self.representations[name]
        for index, stage in enumerate(self.stages):
            if stage.convert is not None and stage.convert.target == name:
                return self.make_representation(index)
        raise ValueError(f"no representation {name!r}: there are {sorted(self.representations)}")

    # --- rendering ------------------------------------------------------------------------------
    def render(self, cameras: CameraBatch, training: bool, background: nn.Module | None = None) -> dict[str, Tensor]:
        """The stage's render of `cameras`; in training, a set of particles renders each share of
        the batch with the particle this step drew for it."""
        stage = self.stage
        material = self.materials[stage.material]
        renderer = self.renderers[stage.renderer]
        representation = self.representation
        pairs = representation.assign(cameras, self.global_step) if training and isinstance(representation, Particles) else [(representation, cameras)]
        return concatenate_renders([renderer(member, material, background or self.background, share, material.sample_shading(share, training), training) for member, share in pairs])

    def render_reference(self, reference: ReferenceView) -> dict[str, Tensor]:
        """The object seen from the reference camera as the reference image shows it: on white
        (the image is composited on white), without shading augmentation (training=False), but
        with gradients."""
        return self.render(reference.cameras, training=False, background=self._white)

    def needs_reference_render(self, step: int) -> bool:
        """Whether an active, weighted loss of this step compares against the reference view."""
        names = self.stage.losses if self.stage.losses is not None else list(self.losses)
        return any(getattr(self.losses[name], "needs_reference_render", False) and value_at(self.loss_weights[name], step) != 0.0 for name in names)

    def transfer_batch_to_device(self, batch: Batch, device: torch.device, dataloader_idx: int) -> Batch:
        return batch.to(device)

    # --- losses ---------------------------------------------------------------------------------
    def _slots_with_overrides(self, stage: Stage) -> dict[str, GuidanceSlot]:
        if stage.slots is None:
            return self.slots
        return {name: replace(self.slots[name], **settings) for name, settings in stage.slots.items()}

    def active_slots(self) -> dict[str, GuidanceSlot]:
        """This stage's slots with its overrides applied."""
        return self._stage_slots[self.stage_index]

    def compute_losses(self, render: dict[str, Tensor], batch: Batch, step: int) -> dict[str, Tensor]:
        """Every weighted term (`loss_<slot>_<term>`, `loss_<name>`), the total (`loss`) and
        the slots' diagnostics (`<slot>_<name>`)."""
        condition = Condition(batch.cameras, self.prompt, batch.reference)
        out: dict[str, Tensor] = {}
        total: Tensor | float = 0.0
        for name, slot in self.active_slots().items():
            weight = value_at(slot.weight, step)
            for key, value in slot(slot.inputs(render, self.representation), condition, step).items():
                if key.startswith("loss_"):
                    out[f"loss_{name}_{key[len('loss_'):]}"] = value
                    total = total + weight * value
                else:
                    out[f"{name}_{key}"] = value
        active_losses = self.stage.losses if self.stage.losses is not None else list(self.losses)
        for name in active_losses:
            weight = value_at(self.loss_weights[name], step)
            if weight != 0.0:
                out[f"loss_{name}"] = value = self.losses[name](render, batch)
                total = total + weight * value
        if not isinstance(total, Tensor):
            raise ValueError(f"stage {self.stage.name!r} has no active guidance slot or weighted loss at step {step}: nothing to optimise")
        out["loss"] = total
        return out

    # --- training -------------------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        step = self.global_step
        stage = self.stage
        group = self.optimizers()
        inner: OptimizerGroup = group.optimizer  # type: ignore[assignment]
        self.set_learning_rates(inner, step)
        self.renderers[stage.renderer].update(self.representation, step)
        render = self.render(batch.cameras, training=True)
        if batch.reference is not None and self.needs_reference_render(step):
            render["reference"] = self.render_reference(batch.reference)
        if stage.densification is not None:
            stage.densification.pre_backward(self.representation, inner.members, step, render["info"])
        losses = self.compute_losses(render, batch, step)
        group.zero_grad()
        self.manual_backward(losses["loss"])
        if isinstance(self.trainer.strategy, UnwrappedDDPStrategy):
            average_gradients(p for g in inner.param_groups for p in g["params"])
        # A NaN/Inf step is skipped whole: no gradients reach the optimisers and densification
        # neither accumulates its statistics nor densifies.
        admitted = self.admit_step(is_finite(losses["loss"]), inner)
        group.step()
        if stage.densification is not None:
            if admitted:
                stage.densification.post_backward(self.representation, inner.members, step, render["info"])
            losses["n_gaussians"] = torch.tensor(float(self.representation.num_gaussians))
        self.log("loss", losses["loss"].detach(), prog_bar=True, logger=False)
        metrics = {f"train/{k}": float(v.detach()) for k, v in losses.items()}
        self.log_step_metrics({**metrics, "train/resolution": float(batch.cameras.height), "train/skipped_steps": float(self.nonfinite.skipped_steps)}, step)
        return losses["loss"]

    def log_step_metrics(self, metrics: dict[str, float], step: int) -> None:
        """This step's terms, straight to the loggers (every `trainer.log_every_n_steps`). Not
        through `self.log`: Lightning keeps every key logged earlier in the epoch and repeats its
        last value, so a stage's rows would show the previous stage's terms, frozen."""
        if step % self.trainer.log_every_n_steps != 0 or not self.trainer.is_global_zero:
            return
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step)

    def admit_step(self, loss_finite: bool, optimizer: torch.optim.Optimizer) -> bool:
        """Whether this step's update may be applied, once its gradients are complete; a skipped
        step leaves `optimizer` no gradients, so its `step()` changes nothing (the training step
        logs the count, `train/skipped_steps`). Every rank reaches the same verdict."""
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        return self.nonfinite.admit(self.global_step, loss_finite, parameters, self.trainer.strategy.reduce_boolean_decision)

    # --- optimisation ---------------------------------------------------------------------------
    def trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """(name, parameter) of what the current stage trains, named from `PARAMETER_ROOTS`:
        its representation, the background, its material, its slots' trainable parts."""
        stage = self.stage
        slots = self.active_slots()
        modules = {"representation": self.representation, "background": self.background, "material": self.materials[stage.material]}
        # Only the parts of the stage's estimators: a LoRA that a stage's SDS ignores gets no optimiser there.
        modules.update({f"guidance.{name}.{part}": module for name, slot in slots.items() for part, module in slot.trainable_modules(in_use_only=True).items()})
        for root, module in modules.items():
            named = module.rate_named_parameters() if isinstance(module, Particles) else module.named_parameters()
            for name, parameter in named:
                if parameter.requires_grad:
                    yield f"{root}.{name}", parameter

    def _rates_with_part_defaults(self, stage: Stage) -> dict[str, Any]:
        """`stage`'s learning rates (or the system's), plus the default rate of each trainable
        guidance part (VSD's LoRA) that none of them names, under `guidance.<slot>.<part>`."""
        rates = dict(stage.learning_rates if stage.learning_rates is not None else self.learning_rates)
        for slot, parts in self.guidance_parts.items():
            for part, module in parts.items():
                prefix = f"guidance.{slot}.{part}"
                default = getattr(module, "learning_rate", None)
                if default is not None and not any(prefix.startswith(known) or known.startswith(prefix) for known in rates):
                    rates[prefix] = as_scalar(default)
        return rates

    def stage_learning_rates(self) -> dict[str, Any]:
        """The current stage's learning rates, with the guidance parts' defaults (converted to
        schedules once, when the system was built)."""
        return self._stage_rates[self.stage_index]

    def stage_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """One optimiser per learning-rate prefix (the longest matching prefix wins); a prefix
        whose rate is None is frozen in this stage (Fantasia3D's geometry while its material
        trains): its parameters get no optimiser."""
        rates = self.stage_learning_rates()
        groups: dict[str, list[nn.Parameter]] = {}
        for name, parameter in self.trainable_parameters():
            matches = [prefix for prefix in rates if name.startswith(prefix)]
            if not matches:
                raise ValueError(f"stage {self.stage.name!r}: parameter {name!r} matches no prefix of its learning_rates {sorted(rates)}")
            prefix = max(matches, key=len)
            if rates[prefix] is not None:
                groups.setdefault(prefix, []).append(parameter)
        return {prefix: self.optimizer_factory([{"params": params, "lr": 0.0, "name": prefix}]) for prefix, params in groups.items()}

    def configure_optimizers(self) -> OptimizerGroup:
        return OptimizerGroup(self.stage_optimizers())

    def set_learning_rates(self, group: OptimizerGroup, step: int) -> None:
        """Every member's learning rate at `step` (schedules are per step)."""
        rates = self.stage_learning_rates()
        for name, optimizer in group.members.items():
            for param_group in optimizer.param_groups:
                param_group["lr"] = value_at(rates[name], step)

    # --- checkpoints: stage, shapes, randomness ---------------------------------------------------
    def _generators(self) -> dict[str, torch.Generator]:
        found = {name or "system": module.generator for name, module in self.named_modules() if isinstance(getattr(module, "generator", None), torch.Generator)}
        for name, slot in self.slots.items():
            if isinstance(getattr(slot.guidance, "generator", None), torch.Generator):
                found[f"guidance.{name}"] = slot.guidance.generator
        return found

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["stage"] = self.stage.name
        checkpoint["representation_shapes"] = {name: rep.shape_state() for name, rep in self.representations.items() if hasattr(rep, "shape_state")}
        checkpoint["densification"] = {stage.name: stage.densification.state_dict() for stage in self.stages if stage.densification is not None}
        checkpoint["generators"] = {name: g.get_state() for name, g in self._generators().items()}
        checkpoint["nonfinite"] = self.nonfinite.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Take the checkpoint's stage and shapes before its state dict is loaded (Lightning
        loads it after this, then builds the optimisers of the restored stage)."""
        names = [stage.name for stage in self.stages]
        stage = checkpoint.get("stage", names[0])
        if stage not in names:
            raise ValueError(f"the checkpoint's stage {stage!r} is not one of this method's stages {names}")
        self.stage_index = names.index(stage)
        for name, shape in checkpoint.get("representation_shapes", {}).items():
            if name in self.representations:
                self.representations[name].load_shape_state(shape)
                continue
            producers = [i for i, s in enumerate(self.stages) if s.convert is not None and s.convert.target == name]
            if not producers:
                raise ValueError(f"the checkpoint holds a representation {name!r} this method never makes")
            index = producers[0]
            source = shown(self.representations[self.stages[index - 1].representation]) if index > 0 else None
            self.representations[name] = self.stages[index].convert.placeholder(shape, source).to(self.device)
        for stage_obj in self.stages:
            if stage_obj.densification is not None and stage_obj.name in checkpoint.get("densification", {}):
                stage_obj.densification.load_state_dict(checkpoint["densification"][stage_obj.name])
        for name, generator in self._generators().items():
            if name in checkpoint.get("generators", {}):
                generator.set_state(checkpoint["generators"][name])
        if "nonfinite" in checkpoint:
            self.nonfinite.load_state_dict(checkpoint["nonfinite"])

    # --- feed-forward -----------------------------------------------------------------------------
    def predict_step(self, batch: Batch, batch_idx: int) -> None:
        """Feed-forward: the reconstructor makes the representation from the batch."""
        assert self.reconstructor is not None
        with torch.no_grad():
            self.representations["main"] = self.reconstructor(batch).to(self.device)

    # --- validation and the turntable -----------------------------------------------------------
    def _panels(self, render: dict[str, Tensor]) -> list[Tensor]:
        panels = [render["rgb"]]
        if "normal" in render:
            panels.append((render["normal"] * 0.5 + 0.5) * render["opacity"] + (1 - render["opacity"]))
        panels.append(render["opacity"].expand(*render["opacity"].shape[:-1], 3))
        return panels

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        with torch.no_grad():
            render = self.render(batch.cameras, training=False)
        if not self.trainer.is_global_zero:
            return
        grid = image_grid(torch.stack(self._panels(render)).cpu())
        save_png(self.save_dir / f"val_step{self.global_step:06d}.png", grid)
        for logger in self.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="validation", images=[to_uint8(grid)], step=self.global_step)

    def on_test_epoch_start(self) -> None:
        self._turntable = []

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        with torch.no_grad():
            render = self.render(batch.cameras, training=False)
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
