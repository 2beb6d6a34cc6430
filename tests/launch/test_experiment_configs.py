"""Every experiment's config resolves: an interpolation naming a key that another experiment lacks
(a callbacks file shared by two methods reading one method's stage) fails here, not at the end of a
run, when its exports are built."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from tests.helpers import EXPERIMENTS, compose_config


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("shape", ["default", "null"])
def test_every_experiment_resolves_its_system_and_callbacks(experiment: str, shape: str, tmp_path) -> None:
    overrides = [f"experiment={experiment}", "prompt=a red cube", f"run_dir={tmp_path}"]
    if shape == "null":
        overrides.append("++representation.shape=null")  # the ball, where an experiment starts from a shape
    config = compose_config(overrides)
    for key in ("representation", "system", "callbacks"):
        OmegaConf.to_container(config[key], resolve=True)
