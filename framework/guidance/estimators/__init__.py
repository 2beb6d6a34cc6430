"""Score-distillation estimators by name (`estimator=sds|vsd|ism|csd|nfsd` on any guidance slot)."""

from __future__ import annotations

from typing import Any, Mapping

from framework.guidance.estimators.base import ScoreEstimator
from framework.guidance.estimators.csd import ClassifierScoreDistillation
from framework.guidance.estimators.ism import IntervalScoreMatching
from framework.guidance.estimators.nfsd import NoiseFreeScoreDistillation
from framework.guidance.estimators.sds import ScoreDistillationSampling
from framework.guidance.estimators.vsd import VariationalScoreDistillation

ESTIMATORS: dict[str, type[ScoreEstimator]] = {
    "sds": ScoreDistillationSampling,
    "vsd": VariationalScoreDistillation,
    "ism": IntervalScoreMatching,
    "csd": ClassifierScoreDistillation,
    "nfsd": NoiseFreeScoreDistillation,
}


def build_estimator(spec: str | Mapping[str, Any]) -> ScoreEstimator:
    """An estimator from its name, or from {name: ..., <option>: ...} (e.g. {name: ism, interval: 0.1})."""
    options = dict(spec) if isinstance(spec, Mapping) else {"name": spec}
    name = options.pop("name", None)
    if name not in ESTIMATORS:
        raise ValueError(f"estimator={name!r}: expected one of {sorted(ESTIMATORS)} (or {{name: ..., <option>: ...}})")
    try:
        return ESTIMATORS[name](**options)
    except TypeError as error:
        raise ValueError(f"estimator {name!r}: {error}") from None
