"""Guidance slots: a named guidance, what it looks at, and its weight.

A method holds any number of slots (RichDreamer: a normal-depth prior and an albedo prior; GSGEN:
a 2D prior on renders and a 3D prior on the Gaussians' positions). Each slot names its input: a
render key (`rgb`, `normal`, `albedo`, `depth`, `opacity`; a list concatenates channels) or a
representation tensor (`representation.means`). Its terms are logged under its name
(`loss_<slot>_sds`) and weighted by its weight (number or schedule).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from framework.guidance.condition import Condition
from framework.guidance.estimators import build_estimator
from framework.guidance.estimators.base import ScoreEstimator
from framework.schedules import Scalar, as_scalar

REPRESENTATION_PREFIX = "representation."
SLOT_SETTINGS = ("weight", "input", "encoded", "estimator", "text")

StepReplacement = Callable[[Any, Tensor, Condition, int], dict[str, Tensor]]


@dataclass
class GuidanceSlot:
    """Args:
    name: the slot's name (`main` for `guidance=...`).
    guidance: a guidance (`ScoreDistillation` or any callable `(inputs, condition, step) -> terms`).
    input: a render key, a list of render keys, or `representation.<attribute>`.
    weight: multiplies the slot's `loss_*` terms (number, Schedule or [[step, value], ...]).
    encoded: the input's channels are the model-space sample itself, with no encoder: the
        guidance's `as_sample` resizes them to its sample size and maps [0, 1] to [-1, 1]
        (Fantasia3D's normal map + mask fed to a latent prior as its four latent channels).
    estimator: the score-distillation estimator: a name (`sds`, `vsd`, `ism`, `csd`, `nfsd`),
        {name: ..., <option>: ...}, or a `ScoreEstimator`; None: SDS. Or a callable
        `(guidance, inputs, condition, step) -> terms` that replaces the guidance's step (a
        stage can swap SDS for another target, e.g. DreamGaussian's denoised image).
    text: the slot's prompt, made from the run's: "{prompt}" is replaced by it (e.g. "a normal
        map of {prompt}" for a prior that learnt normal maps); None: the run's prompt as is.
    """

    name: str
    guidance: Any
    input: str | Sequence[str] = "rgb"
    weight: Scalar = 1.0
    encoded: bool = False
    estimator: str | Mapping[str, Any] | ScoreEstimator | StepReplacement | None = None
    text: str | None = None
    # Estimators built from names, by name: shared by the slot's stage variants (`replace`
    # passes it on), so every stage that names `vsd` trains the same LoRA.
    built_estimators: dict[str, ScoreEstimator] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.weight = as_scalar(self.weight)
        if not isinstance(self.input, str):
            self.input = list(self.input)
        if isinstance(self.estimator, (str, Mapping)):
            key = repr(self.estimator if isinstance(self.estimator, str) else sorted(dict(self.estimator).items()))
            if key not in self.built_estimators:
                built = build_estimator(self.estimator)
                built.bind(self.guidance)
                self.built_estimators[key] = built
            self.estimator = self.built_estimators[key]
        elif isinstance(self.estimator, ScoreEstimator) and all(built is not self.estimator for built in self.built_estimators.values()):
            self.estimator.bind(self.guidance)
            self.built_estimators[f"object {id(self.estimator)}"] = self.estimator

    def trainable_modules(self, in_use_only: bool = False) -> dict[str, nn.Module]:
        """What trains beside the 3D parameters: the guidance's parts and those of every
        estimator this slot has built (in any stage), or with `in_use_only` of its own estimator."""
        parts = dict(getattr(self.guidance, "trainable_modules", dict)())
        in_use = [self.estimator] if isinstance(self.estimator, ScoreEstimator) else []
        for estimator in in_use if in_use_only else self.built_estimators.values():
            for name, module in estimator.trainable_modules().items():
                if name in parts:
                    raise ValueError(f"guidance slot {self.name!r}: two trainable parts are named {name!r}")
                parts[name] = module
        return parts

    def inputs(self, render: Mapping[str, Tensor], representation: nn.Module) -> Tensor:
        """What the slot looks at, from this step's render or the active representation."""
        if isinstance(self.input, str) and self.input.startswith(REPRESENTATION_PREFIX):
            attribute = self.input[len(REPRESENTATION_PREFIX) :]
            if not hasattr(representation, attribute):
                raise ValueError(f"guidance slot {self.name!r}: input={self.input!r}, but {type(representation).__name__} has no {attribute!r}")
            return getattr(representation, attribute)
        keys = [self.input] if isinstance(self.input, str) else self.input
        missing = [key for key in keys if key not in render]
        if missing:
            raise ValueError(f"guidance slot {self.name!r}: input {missing} is not rendered here; the renderer gives {sorted(k for k in render if k != 'info')}")
        return render[keys[0]] if len(keys) == 1 else torch.cat([render[key] for key in keys], dim=-1)

    def __call__(self, inputs: Tensor, condition: Condition, step: int) -> dict[str, Tensor]:
        """The guidance's terms: `loss_*` (weighted into the total) and diagnostics."""
        if self.text is not None and condition.text is not None:
            condition = replace(condition, text=self.text.replace("{prompt}", condition.text))
        if self.estimator is not None and not isinstance(self.estimator, ScoreEstimator):
            return self.estimator(self.guidance, inputs, condition, step)
        # A guidance may be any callable of the slot's inputs: it is given an estimator only when one is set.
        estimator = {} if self.estimator is None else {"estimator": self.estimator}
        if self.encoded:
            return self.guidance.estimate(self.guidance.as_sample(inputs.permute(0, 3, 1, 2)), condition, step, **estimator)
        return self.guidance(inputs, condition, step, **estimator)


# Facts about a prior that other parts of a method's config read (the light its images were lit
# by; whether it denoises VAE latents): neither the guidance's arguments nor the slot's settings.
PRIOR_FACTS = ("image_light", "latent")


def split_slot_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A slot's config node -> (the guidance's own arguments, the slot's settings); the
    `PRIOR_FACTS` belong to neither."""
    guidance = {key: value for key, value in config.items() if key not in (*SLOT_SETTINGS, *PRIOR_FACTS)}
    settings = {key: config[key] for key in SLOT_SETTINGS if key in config}
    return guidance, settings
