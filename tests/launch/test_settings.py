"""Settings are checked before any weights load: a NaN/Inf scale, weight, learning rate or schedule
point, or a seed that is not a whole number, is one line naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

import framework.launch as launch
from framework.launch import run
from framework.utils.settings import check_settings
from tests.helpers import EXPERIMENTS, compose_config, tiny_gaussian_overrides, tiny_overrides


@pytest.fixture
def no_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    def build_system(*args, **kwargs):
        raise AssertionError("weights were loaded before the settings were checked")

    monkeypatch.setattr(launch, "build_system", build_system)


@pytest.mark.parametrize(
    "experiment, override, line",
    [
        ("dreamfusion", "guidance.guidance_scale=nan", "guidance.guidance_scale=nan: NaN/Inf is not allowed"),
        ("dreamfusion", "guidance.weight=inf", "guidance.weight=inf: NaN/Inf is not allowed"),
        ("dreamfusion", "guidance.t_min=[[0,0.5],[300,nan]]", "guidance.t_min=[[0, 0.5], [300, nan]]: NaN/Inf is not allowed"),
        ("dreamfusion", "loss.weights.orientation=nan", "loss.weights.orientation=nan: NaN/Inf is not allowed"),
        ("dreamfusion", "system.learning_rates.background=-inf", "system.learning_rates.background=-inf: NaN/Inf is not allowed"),
        ("dreamgaussian", "system.stages.texture.learning_rates.background=nan", "system.stages.texture.learning_rates.background=nan: NaN/Inf"),
        ("dreamgaussian", "guidance.t_max=[[0,0.98],[4,nan]]", "guidance.t_max=[[0, 0.98], [4, nan]]: NaN/Inf is not allowed"),
        ("dreamfusion", "seed=abc", "seed='abc' is not a whole number: pass seed=<integer>, e.g. seed=0"),
        ("dreamfusion", "seed=1.5", "seed=1.5 is not a whole number"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it_before_any_weights_load(experiment, override, line, tmp_path, no_weights):
    tiny = tiny_overrides if experiment == "dreamfusion" else tiny_gaussian_overrides
    cfg = compose_config([f"experiment={experiment}", "prompt=a red cube", *tiny(tmp_path, Path("unused")), override])
    with pytest.raises(ValueError) as refused:
        run(cfg)
    assert str(refused.value).startswith(line) and "\n" not in str(refused.value)


def test_every_shipped_experiment_passes(tmp_path):
    for experiment in EXPERIMENTS:
        check_settings(compose_config([f"experiment={experiment}", "prompt=a red cube", f"run_dir={tmp_path}"]))
