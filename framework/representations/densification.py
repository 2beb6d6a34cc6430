"""Densification of 3D Gaussians around each step, by a gsplat strategy.

gsplat's strategies (`DefaultStrategy`, `MCMCStrategy`) run before and after `backward()` and
replace parameters together with their Adam moments, so every Gaussian parameter has an optimiser
of its own. The strategy's state and the generator behind its random draws (splits, MCMC noise)
live here and are checkpointed by the system, so a resumed run densifies exactly like an
uninterrupted one. With several processes the strategy sees every process's cameras, so all of
them make the same decisions.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from gsplat.strategy import MCMCStrategy
from gsplat.strategy.base import Strategy
from torch.optim import Optimizer

from framework.distributed import distributed, gather_cameras
from framework.representations.gaussians import GaussianModel
from framework.representations.relocation import torch_relocation


def optimizers_of(gaussians: GaussianModel, optimizers: Mapping[str, Optimizer]) -> dict[str, Optimizer]:
    """Gaussian parameter name -> the optimiser that holds exactly that parameter."""
    found = {}
    for name, parameter in gaussians.params.items():
        owners = [opt for opt in optimizers.values() if any(p is parameter for g in opt.param_groups for p in g["params"])]
        if len(owners) != 1 or sum(len(g["params"]) for g in owners[0].param_groups) != 1:
            raise ValueError(f"densification needs one optimiser per Gaussian parameter: give {name!r} a learning-rate prefix of its own")
        found[name] = owners[0]
    return found


class Densification:
    """Args:
    strategy: a gsplat strategy.
    scene_scale: the scene's extent for DefaultStrategy's size thresholds (our objects fit the
        unit sphere).
    seed: of the generator behind the strategy's random draws.
    """

    def __init__(self, strategy: Strategy, scene_scale: float = 1.0, seed: int = 0) -> None:
        self.strategy = strategy
        self.state = strategy.initialize_state() if isinstance(strategy, MCMCStrategy) else strategy.initialize_state(scene_scale=scene_scale)
        self.generator = torch.Generator().manual_seed(seed)

    def pre_backward(self, gaussians: GaussianModel, optimizers: Mapping[str, Optimizer], step: int, info: dict[str, Any]) -> None:
        self.strategy.step_pre_backward(gaussians.params, optimizers_of(gaussians, optimizers), self.state, step, info)

    def post_backward(self, gaussians: GaussianModel, optimizers: Mapping[str, Optimizer], step: int, info: dict[str, Any]) -> None:
        """The strategy's post-backward step, its random draws taken from our generator instead of
        the global one, MCMC relocation in torch on CPU."""
        members = optimizers_of(gaussians, optimizers)
        if distributed():
            means2d = gather_cameras(info["means2d"].detach())
            means2d.grad = gather_cameras(info["means2d"].grad)
            info = dict(info, means2d=means2d, radii=gather_cameras(info["radii"]), n_cameras=means2d.shape[0])
        extra = {"lr": members["means"].param_groups[0]["lr"]} if isinstance(self.strategy, MCMCStrategy) else {"packed": False}
        device = gaussians.means.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch_relocation(device):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=self.generator)))
            self.strategy.step_post_backward(gaussians.params, members, self.state, step, info, **extra)
        if distributed():
            means = gaussians.params["means"].detach()
            fingerprint = gather_cameras(torch.stack([torch.tensor(float(means.shape[0])), means.double().sum().float().cpu()])[None].to(means.device))
            if not torch.equal(fingerprint, fingerprint[:1].expand_as(fingerprint)):
                raise RuntimeError(f"step {step}: the processes' Gaussians diverged (count, sum of means per rank: {fingerprint.tolist()})")

    def state_dict(self) -> dict[str, Any]:
        return {"strategy_state": dict(self.state), "generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.state.update(state["strategy_state"])
        self.generator.set_state(state["generator"])
