"""DreamGaussian: SDS on 3D Gaussians with densification, then a textured mesh refined by
multi-step denoising.

Stage "gaussians": renders of the Gaussians go through SDS (annealed timesteps, scheduled
resolution); a gsplat strategy densifies and prunes around every step. The stage switch
(`framework.callbacks.gaussian_stages.GaussiansToMesh`) turns the Gaussians into a UV-textured
mesh and calls `enter_texture_stage`. Stage "texture": each step renders the mesh, lets the prior
denoise the render from a small noise level (I_fine = denoise(I_coarse + eps(t_start))) and fits
the texture to it with an MSE. When the prior's images are lit by the bundled world's light
(`guidance.world_light`), the texture is baked and rendered as an albedo under that light, so the
exported model is not lit twice in a viewer; otherwise it holds what the renders showed.

Optimisation is manual because gsplat's strategies must run around `backward()` and replace
parameters together with their optimiser state; the stage and the Gaussian count are in every
checkpoint, so `resume=` rebuilds the right modules before their weights are loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from gsplat.strategy import MCMCStrategy
from gsplat.strategy.base import Strategy
from torch import Tensor, nn

from framework.cameras.camera import CameraBatch
from framework.distributed import UnwrappedDDPStrategy, average_gradients, distributed, gather_cameras
from framework.guidance.sds import ScoreDistillation
from framework.optimizers import OptimizerGroup
from framework.representations.gaussians import GaussianModel
from framework.representations.relocation import torch_relocation
from framework.representations.textured_mesh import TexturedMesh
from framework.schedules import as_scalar, value_at
from framework.system import GenerationSystem
from framework.utils.nonfinite import is_finite

STAGES = ("gaussians", "texture")


class DreamGaussianSystem(GenerationSystem):
    """Args (besides `GenerationSystem`'s; `learning_rates` maps Gaussian parameter names —
    means, scales, quats, opacities, sh0, shN — and "background" to numbers or schedules):
        strategy: a gsplat densification strategy (`DefaultStrategy` or `MCMCStrategy`).
        scene_scale: the scene's extent for DefaultStrategy's size thresholds (our objects fit the
            unit sphere).
        mesh_renderer: renders a `TexturedMesh` (rgb, opacity) over the background.
        texture_learning_rates: "texture" and, when vertices move, "vertex_offsets".
        refine_strength: noise level t_start / T of the stage-2 target (a number or schedule).
        refine_steps: DDIM steps of the stage-2 target.
        refine_weight: weight of the stage-2 MSE.
        refine_guidance_scale: classifier-free guidance of the stage-2 denoising (None: the SDS
            scale). Only the texture changes there; 2 instead of 5 moved the colour error of
            the default run by less than 0.003 (docs/dreamgaussian_notes.md).
        seed: of the generator behind densification's random splits (checkpointed, so a resumed
            run splits exactly like an uninterrupted one).
        max_bad_steps: see `GenerationSystem`.
    """

    def __init__(
        self,
        representation: GaussianModel,
        material: nn.Module,
        background: nn.Module,
        renderer: nn.Module,
        guidance: ScoreDistillation,
        losses: Mapping[str, Callable[[dict[str, Tensor]], Tensor]],
        loss_weights: Mapping[str, Any],
        optimizer: Callable[..., torch.optim.Optimizer],
        learning_rates: Mapping[str, Any],
        strategy: Strategy,
        mesh_renderer: nn.Module,
        texture_learning_rates: Mapping[str, Any],
        scene_scale: float = 1.0,
        refine_strength: Any = 0.3,
        refine_steps: int = 4,
        refine_weight: float = 1.0,
        refine_guidance_scale: float | None = None,
        seed: int = 0,
        save_dir: str | Path = "save",
        max_bad_steps: int = 20,
    ) -> None:
        super().__init__(representation, material, background, renderer, guidance, losses, loss_weights, optimizer, {}, save_dir, max_bad_steps)
        self.automatic_optimization = False
        self.learning_rates = {name: as_scalar(lr) for name, lr in learning_rates.items()}
        missing = set(representation.params) - set(self.learning_rates)
        if missing:
            raise ValueError(f"learning_rates has no entry for the Gaussian parameters {sorted(missing)}")
        self.texture_learning_rates = {name: as_scalar(lr) for name, lr in texture_learning_rates.items()}
        self.strategy = strategy
        self.strategy_state = strategy.initialize_state() if isinstance(strategy, MCMCStrategy) else strategy.initialize_state(scene_scale=scene_scale)
        self.mesh_renderer = mesh_renderer
        self.mesh: TexturedMesh | None = None
        self.stage = STAGES[0]
        self.refine_strength = as_scalar(refine_strength)
        self.refine_steps = refine_steps
        self.refine_weight = refine_weight
        self.refine_guidance_scale = refine_guidance_scale
        self.generator = torch.Generator().manual_seed(seed)

    def check_trainer(self, trainer: pl.Trainer) -> None:
        if trainer.world_size > 1 and not isinstance(trainer.strategy, UnwrappedDDPStrategy):
            raise ValueError(
                f"{type(trainer.strategy).__name__} with {trainer.world_size} devices: DreamGaussian needs "
                "trainer.strategy=ddp_unwrapped (densification replaces the Gaussian parameters, which DDP's gradient hooks cannot follow)"
            )

    def setup(self, stage: str) -> None:
        self.check_trainer(self.trainer)  # also when fit is called without the launcher

    # --- stages -----------------------------------------------------------------------------------
    def enter_texture_stage(self, mesh: TexturedMesh) -> None:
        """Switch to optimising `mesh` (called by the stage-switch callback)."""
        self.mesh = mesh.to(self.device)
        self.stage = "texture"
        if self._trainer is not None and self.trainer.optimizers:
            group = self.trainer.optimizers[0]
            assert isinstance(group, OptimizerGroup)
            group.replace_members(self._stage_optimizers())

    def render(self, cameras: CameraBatch, training: bool) -> dict[str, Tensor]:
        if self.stage == "texture":
            assert self.mesh is not None
            return self.mesh_renderer(self.mesh, self.background, cameras, training, lit=self.guidance.world_light)
        return super().render(cameras, training)

    # --- optimisation ------------------------------------------------------------------------------
    def _stage_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        def single(parameter: nn.Parameter, name: str) -> torch.optim.Optimizer:
            return self.optimizer_factory([{"params": [parameter], "lr": 0.0, "name": name}])

        if self.stage == "gaussians":
            members = {name: single(p, name) for name, p in self.representation.params.items()}
            rates = self.learning_rates
        else:
            assert self.mesh is not None
            members = {name: single(p, name) for name, p in self.mesh.named_parameters()}
            rates = self.texture_learning_rates
        unknown = set(members) - set(rates)
        if unknown:
            raise ValueError(f"no learning rate for {sorted(unknown)} in stage {self.stage!r}")
        background = [p for p in self.background.parameters() if p.requires_grad]
        if background:
            members["background"] = self.optimizer_factory([{"params": background, "lr": 0.0, "name": "background"}])
        return members

    def configure_optimizers(self) -> OptimizerGroup:
        return OptimizerGroup(self._stage_optimizers())

    def _set_learning_rates(self, group: OptimizerGroup, step: int) -> None:
        rates = self.learning_rates if self.stage == "gaussians" else self.texture_learning_rates
        for name, optimizer in group.members.items():
            for param_group in optimizer.param_groups:
                param_group["lr"] = value_at(rates.get(name, self.learning_rates.get(name, 0.0)), step)

    def _gaussian_members(self, group: OptimizerGroup) -> dict[str, torch.optim.Optimizer]:
        return {name: group.members[name] for name in self.representation.params}

    def training_step(self, batch: CameraBatch, batch_idx: int) -> Tensor:
        step = self.global_step
        group = self.optimizers()
        inner: OptimizerGroup = group.optimizer  # type: ignore[assignment]
        self._set_learning_rates(inner, step)
        render = self.render(batch, training=True)
        if self.stage == "gaussians":
            info = render["info"]
            self.strategy.step_pre_backward(self.representation.params, self._gaussian_members(inner), self.strategy_state, step, info)
            losses = self.compute_losses(render, batch, step)
        else:
            losses = self.texture_losses(render, batch, step)
        group.zero_grad()
        self.manual_backward(losses["loss"])
        average_gradients(p for optimizer in inner.members.values() for g in optimizer.param_groups for p in g["params"])
        # A NaN/Inf step is skipped whole: no gradients reach the optimisers and the strategy
        # neither accumulates its gradient statistics nor densifies.
        admitted = self.admit_step(is_finite(losses["loss"]), inner)
        group.step()
        if self.stage == "gaussians":
            if admitted:
                self._densify(inner, step, info)
            losses["n_gaussians"] = torch.tensor(float(self.representation.num_gaussians))
        self.log_dict({f"train/{k}": v.detach().float() for k, v in losses.items()}, prog_bar=False)
        self.log("loss", losses["loss"].detach(), prog_bar=True, logger=False)
        self.log("train/resolution", float(batch.height))
        return losses["loss"]

    def _densify(self, group: OptimizerGroup, step: int, info: dict[str, Any]) -> None:
        """The strategy's post-backward step, its random draws (splits, MCMC noise) taken from
        our checkpointed generator instead of the global one, MCMC relocation in torch on CPU.
        With several processes the strategy sees every process's cameras, so all of them make
        the same densification decisions."""
        if distributed():
            means2d = gather_cameras(info["means2d"].detach())
            means2d.grad = gather_cameras(info["means2d"].grad)
            info = dict(info, means2d=means2d, radii=gather_cameras(info["radii"]), n_cameras=means2d.shape[0])
        extra = {"lr": value_at(self.learning_rates["means"], step)} if isinstance(self.strategy, MCMCStrategy) else {"packed": False}
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch_relocation(self.device):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=self.generator)))
            self.strategy.step_post_backward(self.representation.params, self._gaussian_members(group), self.strategy_state, step, info, **extra)
        if distributed():
            means = self.representation.params["means"].detach()
            fingerprint = gather_cameras(torch.stack([torch.tensor(float(means.shape[0])), means.double().sum().float().cpu()])[None].to(means.device))
            if not torch.equal(fingerprint, fingerprint[:1].expand_as(fingerprint)):
                raise RuntimeError(f"step {step}: the processes' Gaussians diverged (count, sum of means per rank: {fingerprint.tolist()})")

    def texture_losses(self, render: dict[str, Tensor], cameras: CameraBatch, step: int) -> dict[str, Tensor]:
        """Stage 2: MSE between the render and the prior's multi-step denoising of it."""
        strength = value_at(self.refine_strength, step)
        target = self.guidance.refine(render["rgb"].detach(), cameras, strength, self.refine_steps, self.refine_guidance_scale)
        loss = self.refine_weight * F.mse_loss(render["rgb"], target.to(render["rgb"]))
        return {"loss_refine": loss, "loss": loss, "refine_strength": torch.tensor(strength)}

    # --- checkpoints: stage, sizes and strategy state ---------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["stage"] = self.stage
        checkpoint["n_gaussians"] = self.representation.num_gaussians
        checkpoint["strategy_state"] = dict(self.strategy_state)
        if self.mesh is not None:
            checkpoint["mesh_sizes"] = self.mesh.sizes()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        stage = checkpoint.get("stage", STAGES[0])
        if stage not in STAGES:
            raise ValueError(f"the checkpoint's stage {stage!r} is not one of {STAGES}")
        self.representation.resize(int(checkpoint["n_gaussians"]))
        self.strategy_state.update(checkpoint.get("strategy_state", {}))
        self.stage = stage
        if "mesh_sizes" in checkpoint:
            self.mesh = TexturedMesh.empty(**checkpoint["mesh_sizes"]).to(self.device)
