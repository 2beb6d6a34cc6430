"""The entry point's contract for bad input: one clear line on stderr, a non-zero exit."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from framework.launch import check_estimators
from tests.helpers import compose_config

ROOT = Path(__file__).resolve().parents[2]


def _launch(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "framework.launch", *overrides], cwd=cwd, capture_output=True, text=True, timeout=300, env=_env())


def _env() -> dict:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env["HYDRA_FULL_ERROR"] = "0"
    return env


def test_help_starts_with_a_usage_line_naming_prompt_and_the_experiments(tmp_path):
    result = _launch("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    usage = result.stdout.splitlines()[:4]
    assert usage[0].startswith("usage: python -m framework.launch experiment=<dreamfusion|dreamgaussian|fantasia3d|gsgen|magic3d|mvdream|prolificdreamer|richdreamer|zero123> prompt=")
    assert any("experiment=zero123 image=<file>" in line for line in usage)
    assert any(line.startswith("prompt= is required") for line in usage)


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


@pytest.mark.slow
def test_more_bad_inputs_each_give_exactly_one_line_naming_the_value(tmp_path):
    """Unknown guidance or launcher, a latent resolution that is not a multiple of 8, an incomplete
    model folder, an unreadable init_from, an image prompt that is not an image: exit 2 and stderr is
    one `error:` line naming the value. Each case is a fresh process; they run side by side."""
    incomplete = tmp_path / "incomplete_model"
    incomplete.mkdir()
    (incomplete / "model_index.json").write_text("{}")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    not_an_image = tmp_path / "prompt.png"
    not_an_image.write_text("a text file named like an image")
    cases = [
        (["guidance=nope"], "In 'config': Could not find 'guidance/nope'; the options are bundled, bundled_albedo, bundled_mv, bundled_normal_depth, bundled_points, deepfloyd_if, mvdream, novel_view, richdreamer_albedo, richdreamer_normal_depth, stable_diffusion, zero123"),
        (["hydra/launcher=nope"], "Could not find 'hydra/launcher/nope'; the options are basic, "),
        (["guidance=stable_diffusion", "guidance.resolution=100"], "resolution=100: a latent diffusion model needs a positive multiple of 8"),
        ([f"guidance.pretrained={incomplete}"], f"model folder '{incomplete}' is incomplete: it has no 'tokenizer' subfolder"),
        ([f"init_from={tmp_path}/missing.ckpt"], f"init_from='{tmp_path}/missing.ckpt': no such checkpoint file"),
        ([f"init_from={garbage}"], f"checkpoint '{garbage}' is not a checkpoint (not a file torch.save wrote)"),
        ([f"image={not_an_image}"], f"image='{not_an_image}' is not a readable image file (UnidentifiedImageError)"),
        (["guidance.estimator=sdss"], "estimator='sdss': expected one of ['csd', 'ism', 'nfsd', 'sds', 'vsd']"),
    ]

    def attempt(case: tuple[int, tuple[list[str], str]]) -> str | None:
        i, (overrides, expected) = case
        result = _launch("prompt=a red cube", *overrides, f"hydra.run.dir={tmp_path}/run{i}", cwd=tmp_path)
        lines = result.stderr.strip().splitlines()
        if result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]:
            return None
        return f"{overrides}: exit {result.returncode}, stderr {result.stderr[-1500:]!r}"

    with ThreadPoolExecutor(max_workers=4) as pool:
        failures = [failure for failure in pool.map(attempt, enumerate(cases)) if failure]
    assert not failures, "\n".join(failures)


@pytest.mark.slow
def test_bad_input_is_refused_before_anything_loads_and_leaves_no_folder(tmp_path):
    """Settings (NaN/Inf numbers, a seed that is not a whole number), an unusable output root or
    run folder, a wrong checkpoint: exit 2, stderr exactly one `error:` line naming the setting (no
    progress bar, no wandb warning: nothing loaded), and no run folder left behind, the default
    one included (an empty prompt used to leave `untitled/<time>/`)."""
    import torch

    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    text = tmp_path / "metrics.ckpt"
    text.write_text("epoch,step,loss\n0,0,1.0\n")
    other = tmp_path / "gaussians.ckpt"
    torch.save({"state_dict": {}, "experiment": "dreamgaussian", "format_version": 1, "stage": "texture"}, other)
    cases = [
        (["prompt="], "error: prompt='' is empty"),
        (["guidance.guidance_scale=nan"], "error: guidance.guidance_scale=nan: NaN/Inf is not allowed"),
        (["loss.weights.orientation=[[0,10.0],[600,inf]]"], "error: loss.weights.orientation=[[0, 10.0], [600, inf]]: NaN/Inf"),
        (["seed=abc"], "error: seed='abc' is not a whole number"),
        ([f"resume={text}"], f"error: checkpoint '{text}' is not a checkpoint (not a file torch.save wrote)"),
        ([f"init_from={other}"], f"error: checkpoint '{other}' is a dreamgaussian checkpoint and this run is dreamfusion: use it with experiment=dreamgaussian"),
        ([f"output_root={a_file}/x"], f"error: output_root='{a_file}/x' cannot hold run folders"),
        ([f"hydra.run.dir={a_file}/run"], f"error: cannot make the run folder '{a_file}/run' (Not a directory): set output_root"),
    ]

    def attempt(case: tuple[int, tuple[list[str], str]]) -> str | None:
        i, (overrides, expected) = case
        root = tmp_path / f"out{i}"
        where = [] if overrides[0].startswith("output_root") else [f"output_root={root}"]
        result = _launch("prompt=a red cube", "trainer.max_steps=2", *overrides, *where, cwd=tmp_path)  # 2 steps: a regression fails fast
        lines = result.stderr.strip().splitlines()
        if result.returncode == 2 and len(lines) == 1 and lines[0].startswith(expected) and not root.exists():
            return None
        return f"{overrides}: exit {result.returncode}, folder left {root.exists()}, stderr {result.stderr[-1500:]!r}"

    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = [failure for failure in pool.map(attempt, enumerate(cases)) if failure]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["experiment=dreamfusion", "guidance.estimator={name:ism,interval:2.0}"], "interval=2.0"),
        (["experiment=dreamfusion", "guidance.estimator={name:vsd,lora_rnk:8}"], "lora_rnk"),
        (["experiment=prolificdreamer", "system.stages.geometry.slots.main.estimator=nfds"], "estimator='nfds'"),
    ],
)
def test_a_bad_estimator_of_a_slot_or_a_stage_is_refused_before_weights_load(overrides, expected):
    with pytest.raises(ValueError, match=expected.replace("[", r"\[")):
        check_estimators(compose_config(["prompt=a red cube", *overrides]))
    check_estimators(compose_config(["prompt=a red cube", overrides[0]]))  # the experiment's own are fine
