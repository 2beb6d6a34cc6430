"""Data-parallel training for systems whose parameters change while they train.

PyTorch's DistributedDataParallel hooks the parameters it sees when it wraps the model; densified
Gaussians are new Parameter objects after every refinement, so DDP would stop averaging them.
`trainer.strategy=ddp_unwrapped` starts the same processes and process group as Lightning's
`ddp` but leaves the module unwrapped, and the system shares gradients itself
(`average_gradients`, `gather_cameras`).
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.distributed as dist
from pytorch_lightning.strategies import DDPStrategy, StrategyRegistry
from torch import Tensor


class UnwrappedDDPStrategy(DDPStrategy):
    """Lightning's DDP processes without the DistributedDataParallel wrapper."""

    strategy_name = "ddp_unwrapped"

    def configure_ddp(self) -> None:
        """Keep the LightningModule as it is: it averages its own gradients."""


StrategyRegistry.register(
    UnwrappedDDPStrategy.strategy_name,
    UnwrappedDDPStrategy,
    description="DDP processes, module not wrapped (systems that average their own gradients)",
    override=True,
)


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def average_gradients(parameters: Iterable[Tensor]) -> None:
    """Average every parameter's gradient over the processes (a missing gradient counts as 0)."""
    if not distributed():
        return
    world_size = dist.get_world_size()
    for parameter in parameters:
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        dist.all_reduce(parameter.grad)
        parameter.grad /= world_size


def gather_cameras(tensor: Tensor) -> Tensor:
    """[C, ...] per process -> [world_size * C, ...] on every process (camera-major, rank order)."""
    if not distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)
