"""The entry point's contract for bad input: one clear line on stderr, a non-zero exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _launch(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "framework.launch", *overrides], cwd=cwd, capture_output=True, text=True, timeout=300, env=_env())


def _env() -> dict:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env["HYDRA_FULL_ERROR"] = "0"
    return env


def test_cfg_job_prints_the_composed_config(tmp_path):
    result = _launch("experiment=dreamfusion", "prompt=a red cube", "--cfg", "job", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "_target_: framework.system.GenerationSystem" in result.stdout and "prompt: a red cube" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["experiment=nope", "prompt=a red cube"], "Could not find 'experiment/nope'"),
        (["prompt=  "], "is empty"),
        (["prompt=" + "x" * 400], "at most 300"),
        (["prompt=a red cube", "guidance.pretrained=/nonexistent/model"], "/nonexistent/model"),
        (["prompt=a red cube", "backend=cuda"], "backend=cuda but CUDA is not available"),
        (["prompt=a red cube", "backend=metal"], "backend='metal'"),
        (["prompt=a red cube", "resume=/nonexistent.ckpt"], "resume='/nonexistent.ckpt'"),
        (["prompt=a red cube", "trainer.max_stepz=3"], "max_stepz"),
    ],
)
def test_bad_input_gives_one_clear_line_and_a_non_zero_exit(overrides, expected, tmp_path):
    if "backend=cuda" in overrides:
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA is available here, so backend=cuda is valid")
    result = _launch(*overrides, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
