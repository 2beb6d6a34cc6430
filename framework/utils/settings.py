"""Settings checked before anything loads, each refusal one line naming the setting.

A NaN or Inf scale, weight, learning rate or schedule point does not fail by itself: it turns every
step into NaN (or into nothing at all, where something downstream hides it) after minutes of
loading. So every number in the composed config must be finite, and the seed a whole number,
before any weight loads.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

from omegaconf import DictConfig, ListConfig, OmegaConf


def _non_finite(value: Any) -> bool:
    """A float NaN/Inf anywhere in a plain value (a number, or a schedule's [[step, value], ...])."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return any(_non_finite(item) for item in value)
    return False


def non_finite_settings(node: DictConfig | ListConfig, path: str = "") -> Iterator[tuple[str, Any]]:
    """(config path, value) of every setting holding a NaN/Inf, lists (schedules) reported whole.
    Interpolations are skipped: the setting they point to is reported under its own path."""
    keys = range(len(node)) if isinstance(node, ListConfig) else list(node.keys())
    for key in keys:
        if OmegaConf.is_missing(node, key) or OmegaConf.is_interpolation(node, key):
            continue
        child = node._get_node(key)
        where = f"{path}[{key}]" if isinstance(node, ListConfig) else (f"{path}.{key}" if path else str(key))
        if isinstance(child, ListConfig):
            value = OmegaConf.to_container(child, resolve=False)
            if _non_finite([item for item in value if not (isinstance(item, str) and "${" in item)]):
                yield where, value
        elif isinstance(child, DictConfig):
            yield from non_finite_settings(child, where)
        elif _non_finite(node[key]):
            yield where, node[key]


def check_settings(cfg: DictConfig) -> None:
    """Raise ValueError (one line, naming the setting) for a seed that is not a whole number or a
    NaN/Inf anywhere in the config."""
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed={seed!r} is not a whole number: pass seed=<integer>, e.g. seed=0")
    max_bad_steps = cfg.get("max_bad_steps", 1)
    if isinstance(max_bad_steps, bool) or not isinstance(max_bad_steps, int) or max_bad_steps < 1:
        raise ValueError(f"max_bad_steps={max_bad_steps!r}: expected a whole number >= 1")
    for path, value in non_finite_settings(cfg):
        raise ValueError(f"{path}={value!r}: NaN/Inf is not allowed, scales, weights, learning rates and schedules must be finite numbers")
