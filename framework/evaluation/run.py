"""Scoring a finished run: its exported asset against the true object of its prompt."""

from __future__ import annotations

import json
import math
from pathlib import Path

from omegaconf import OmegaConf

from framework.evaluation.asset import load_asset, render_asset
from framework.evaluation.metrics import color_error, mask_iou
from framework.evaluation.views import evaluation_cameras
from framework.utils.atomic import atomic_path
from framework.world.objects import OBJECTS, parse_prompt
from framework.world.render import render_object

ASSET = Path("export") / "model.glb"
CONFIG = Path(".hydra") / "config.yaml"


def read_prompt(run_dir: str | Path) -> str:
    """The `prompt` of a run's composed Hydra config (RUN_DIR/.hydra/config.yaml)."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a run directory?")
    prompt = OmegaConf.select(OmegaConf.load(path), "prompt")
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"{path}: `prompt` must be a non-empty string, got {prompt!r}")
    return prompt


def evaluate_run(run_dir: str | Path, n_views: int = 8, resolution: int = 64) -> dict:
    """Render RUN_DIR/export/model.glb and the prompt's true object from `evaluation_cameras` and
    write RUN_DIR/eval.json: per-view mask IoU and colour error (mean absolute RGB difference
    where both masks cover the pixel; null where they do not overlap), their means, and the prompt.

    Returns:
        The dict written to eval.json.

    Raises:
        FileNotFoundError: the config or the asset is missing.
        ValueError: the prompt names no object of the bundled world.
    """
    run_dir = Path(run_dir)
    prompt = read_prompt(run_dir)
    colour, object_name = parse_prompt(prompt)
    asset = load_asset(run_dir / ASSET)
    cameras = evaluation_cameras(n_views, resolution)
    true_rgb, true_mask = render_object(OBJECTS[object_name], colour, cameras)
    rgb, mask = render_asset(asset, cameras)
    ious = mask_iou(mask, true_mask).tolist()
    errors = [None if math.isnan(e) else e for e in color_error(rgb, true_rgb, mask, true_mask).tolist()]
    defined = [e for e in errors if e is not None]
    result = {
        "prompt": prompt,
        "asset": str(ASSET),
        "n_views": n_views,
        "resolution": resolution,
        "mask_iou_mean": sum(ious) / len(ious),
        "color_error_mean": sum(defined) / len(defined) if defined else None,
        "views": [
            {"elevation": float(e), "azimuth": float(a), "mask_iou": iou, "color_error": error}
            for e, a, iou, error in zip(cameras.elevation_deg, cameras.azimuth_deg, ious, errors)
        ],
    }
    with atomic_path(run_dir / "eval.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    return result
