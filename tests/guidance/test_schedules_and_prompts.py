import pytest
import torch

from framework.guidance.prompts import VIEWS, ViewThresholds, view_dependent_prompt, view_index
from framework.schedules import Schedule, as_scalar, value_at


def test_linear_schedule_interpolates_and_clamps():
    schedule = Schedule([[0, 0.98], [100, 0.5]])
    assert schedule(-5) == pytest.approx(0.98)
    assert schedule(50) == pytest.approx(0.74)
    assert schedule(1000) == pytest.approx(0.5)


def test_step_schedule_holds_values():
    schedule = Schedule([[0, 64], [100, 128]], interpolation="step")
    assert schedule(99) == 64 and schedule(100) == 128


def test_as_scalar_reads_numbers_and_pairs():
    assert value_at(as_scalar(3.0), 10) == 3.0
    assert value_at(as_scalar([[0, 1.0], [10, 2.0]]), 5) == pytest.approx(1.5)


@pytest.mark.parametrize("points, message", [([], "empty"), ([[10, 1.0], [0, 2.0]], "must not decrease")])
def test_bad_schedules_are_named(points, message):
    with pytest.raises(ValueError, match=message):
        Schedule(points)


def test_view_thresholds_follow_dreamfusion():
    elevation = torch.tensor([0.0, 0.0, 0.0, 0.0, 70.0, 10.0])
    azimuth = torch.tensor([10.0, 90.0, 180.0, -170.0, 0.0, 359.0])
    names = [VIEWS[i] for i in view_index(elevation, azimuth)]
    assert names == ["front", "side", "back", "back", "overhead", "front"]
    wide = [VIEWS[i] for i in view_index(torch.tensor([0.0]), torch.tensor([60.0]), ViewThresholds(front=70.0))]
    assert wide == ["front"]


def test_view_dependent_prompt_text():
    assert view_dependent_prompt("a red cube", "back") == "a red cube, back view"
