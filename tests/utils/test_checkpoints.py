"""Checkpoints say what they are (method, stage, format), and every load problem is one line before
any weights load: not a checkpoint, truncated, an unsafe pickle, another method's, a newer format;
a checkpoint of another configuration is one line too, while it is restored."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import framework.launch as launch
from framework.launch import run, start_checkpoint
from framework.utils.checkpoint_io import CHECKPOINT_FORMAT, load_checkpoint_file
from tests.helpers import compose_config, tiny_gaussian_overrides, tiny_overrides

DREAMFUSION = ["experiment=dreamfusion", "prompt=a red cube"]
DREAMGAUSSIAN = ["experiment=dreamgaussian", "prompt=a red cube"]


class _Payload:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.fixture(scope="module")
def dreamfusion_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_pixel_prior: Path) -> Path:
    """The last checkpoint of a 2-step DreamFusion run (16^2 triplane)."""
    run_dir = tmp_path_factory.mktemp("dreamfusion")
    run(compose_config([*DREAMFUSION, *tiny_overrides(run_dir, tiny_pixel_prior, max_steps=2)]))
    return run_dir / "ckpts" / "last.ckpt"


@pytest.fixture
def no_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the run gets as far as loading weights (building the system and its prior)."""

    def build_system(*args, **kwargs):
        raise AssertionError("weights were loaded before the checkpoint was checked")

    monkeypatch.setattr(launch, "build_system", build_system)


def test_a_checkpoint_records_its_method_stage_and_format(dreamfusion_checkpoint):
    state = load_checkpoint_file(dreamfusion_checkpoint)
    assert (state["experiment"], state["stage"], state["format_version"]) == ("dreamfusion", "main", CHECKPOINT_FORMAT)


def test_every_load_problem_is_one_line_before_any_weights_load(tmp_path, dreamfusion_checkpoint, no_weights):
    """resume= and init_from= alike: each bad file gives a ValueError whose one line says what is wrong."""
    real = dreamfusion_checkpoint.read_bytes()
    marker = tmp_path / "payload-ran"
    files = {
        "text.ckpt": b"epoch,step,loss\n0,0,1.0\n",  # torch.load: KeyError 101 ('e')
        "empty.ckpt": b"",
        "truncated.ckpt": real[: len(real) // 2],
        "cut.ckpt": real[:1000],
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    torch.save({"state_dict": {}, "hook": _Payload(marker)}, tmp_path / "unsafe.ckpt")
    torch.save({"weights": {}}, tmp_path / "foreign.ckpt")
    state = load_checkpoint_file(dreamfusion_checkpoint)
    torch.save({**state, "experiment": "dreamgaussian"}, tmp_path / "other_method.ckpt")
    torch.save({**state, "format_version": CHECKPOINT_FORMAT + 1}, tmp_path / "newer.ckpt")
    expected = {
        "text.ckpt": "is not a checkpoint (not a file torch.save wrote)",
        "empty.ckpt": "is empty: not a checkpoint",
        "truncated.ckpt": "is truncated or damaged (",
        "cut.ckpt": "is truncated or damaged (",
        "unsafe.ckpt": "was refused for safety: loading it would build posix.system, which can run code (only tensors and plain data are loaded)",
        "foreign.ckpt": "holds no 'state_dict': not a checkpoint of ours",
        "other_method.ckpt": "is a dreamgaussian checkpoint and this run is dreamfusion: use it with experiment=dreamgaussian",
        "newer.ckpt": f"has format {CHECKPOINT_FORMAT + 1}, newer than this sds3d reads ({CHECKPOINT_FORMAT} and older): update sds3d",
    }
    for name, message in expected.items():
        path = tmp_path / name
        for key in ("resume", "init_from"):
            cfg = compose_config([*DREAMFUSION, f"{key}={path}", *tiny_overrides(tmp_path / "run", Path("unused"))])
            with pytest.raises(ValueError) as refused:
                run(cfg)
            assert str(refused.value).startswith(f"checkpoint {str(path)!r} {message}"), (name, key, str(refused.value))
            assert "\n" not in str(refused.value)
    assert not marker.exists()


def test_another_methods_checkpoint_is_refused_naming_both_methods(tmp_path, dreamfusion_checkpoint, no_weights):
    for key in ("resume", "init_from"):
        cfg = compose_config([*DREAMGAUSSIAN, f"{key}={dreamfusion_checkpoint}", *tiny_gaussian_overrides(tmp_path, Path("unused"))])
        with pytest.raises(ValueError, match=r"is a dreamfusion checkpoint and this run is dreamgaussian: use it with experiment=dreamfusion$"):
            run(cfg)


def test_resume_auto_checks_the_runs_own_checkpoint_too(tmp_path, dreamfusion_checkpoint):
    (tmp_path / "ckpts").mkdir()
    (tmp_path / "ckpts" / "last.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"last.ckpt' is not a checkpoint"):
        start_checkpoint(compose_config([*DREAMFUSION, f"run_dir={tmp_path}", "resume=auto"]))
    (tmp_path / "ckpts" / "last.ckpt").write_bytes(dreamfusion_checkpoint.read_bytes())
    assert start_checkpoint(compose_config([*DREAMFUSION, f"run_dir={tmp_path}", "resume=auto"])) == str(tmp_path / "ckpts" / "last.ckpt")


def test_a_checkpoint_that_does_not_fit_the_configuration_is_one_line(tmp_path, dreamfusion_checkpoint, tiny_pixel_prior):
    """Same method, other sizes (a 16^2 triplane into an 8^2 one), or a checkpoint from before the
    stamp given to another method: Lightning's restore fails, and says so in one line."""
    cfg = compose_config([*DREAMFUSION, f"resume={dreamfusion_checkpoint}", *tiny_overrides(tmp_path / "small", tiny_pixel_prior), "representation.encoding.resolution=8"])
    with pytest.raises(ValueError) as refused:
        run(cfg)
    line = str(refused.value)
    assert line.startswith(f"checkpoint {str(dreamfusion_checkpoint)!r} does not fit this dreamfusion run (another configuration?): RuntimeError: ")
    assert "size mismatch for representations.main.encoding.planes" in line and "\n" not in line
    unstamped = {key: value for key, value in load_checkpoint_file(dreamfusion_checkpoint).items() if key not in ("experiment", "format_version")}
    torch.save(unstamped, tmp_path / "old.ckpt")
    cfg = compose_config([*DREAMGAUSSIAN, f"init_from={tmp_path / 'old.ckpt'}", *tiny_gaussian_overrides(tmp_path / "gaussians", tiny_pixel_prior)])
    with pytest.raises(ValueError, match=r"old.ckpt' does not fit this dreamgaussian run \(another configuration\?\): ValueError: the checkpoint's stage 'main'"):
        run(cfg)
