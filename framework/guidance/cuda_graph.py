"""Replaying a frozen network's forward pass as a CUDA graph.

SDS calls a small, frozen UNet once per step (several times in DreamGaussian's refinement) on
inputs of one fixed shape. On a GPU such a call is bound by the CPU launching hundreds of tiny
kernels, not by the GPU: the bundled prior's forward is ~700 operators. A CUDA graph records the
launches once and replays them with one call, so the step costs what the GPU work costs.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import Tensor

Signature = tuple[tuple[tuple[int, ...], torch.dtype, torch.device], ...]


class GraphedCall:
    """`fn(*inputs) -> Tensor` captured once per input signature (shapes, dtypes, devices) and
    replayed afterwards. Inputs are copied into the graph's own buffers and the output is cloned,
    so callers may keep or change what they pass and what they get.

    Only for functions that read nothing but their inputs and fixed state (frozen weights) and
    that make no host-side decisions on tensor values: a graph replays exactly the kernels it
    recorded. Calls on the CPU, or with gradients enabled, run `fn` directly, and so does every
    call of a signature whose capture failed (a model that synchronises with the host), with a
    warning.

    Args:
        fn: the function to capture.
        warmup_calls: eager calls on a side stream before capture (lazy initialisation, such as
            cuDNN's algorithm choice, must not happen inside the graph).
    """

    def __init__(self, fn: Callable[..., Tensor], warmup_calls: int = 2) -> None:
        self.fn = fn
        self.warmup_calls = warmup_calls
        self._graphs: dict[Signature, tuple[torch.cuda.CUDAGraph, tuple[Tensor, ...], Tensor] | None] = {}

    def __call__(self, *inputs: Tensor) -> Tensor:
        if torch.is_grad_enabled() or not self._on_cuda(inputs):
            return self.fn(*inputs)
        key = tuple((tuple(x.shape), x.dtype, x.device) for x in inputs)
        if key not in self._graphs:
            try:
                self._graphs[key] = self._capture(inputs)
            except RuntimeError as error:
                warnings.warn(f"CUDA graph capture of {getattr(self.fn, '__qualname__', self.fn)} failed, running it eagerly: {error}")
                self._graphs[key] = None
        entry = self._graphs[key]
        if entry is None:
            return self.fn(*inputs)
        graph, static_inputs, static_output = entry
        for buffer, x in zip(static_inputs, inputs):
            buffer.copy_(x)
        graph.replay()
        return static_output.clone()

    @property
    def n_graphs(self) -> int:
        return sum(entry is not None for entry in self._graphs.values())

    @staticmethod
    def _on_cuda(inputs: tuple[Tensor, ...]) -> bool:
        return all(x.is_cuda for x in inputs)

    def _capture(self, inputs: tuple[Tensor, ...]) -> tuple[torch.cuda.CUDAGraph, tuple[Tensor, ...], Tensor]:
        static_inputs = tuple(x.detach().clone() for x in inputs)
        side = torch.cuda.Stream(device=inputs[0].device)
        side.wait_stream(torch.cuda.current_stream(inputs[0].device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup_calls):
                self.fn(*static_inputs)
        torch.cuda.current_stream(inputs[0].device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_output = self.fn(*static_inputs)
        return graph, static_inputs, static_output
