"""Scoring a finished run: its exported asset against the true object of its prompt."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import Tensor

from bundled.evaluation.asset import load_asset, render_asset
from bundled.evaluation.janus import janus_cameras, view_verdicts
from bundled.evaluation.metrics import UNCLASSIFIED, classify_colour, color_error, mask_iou, mean_colour
from bundled.evaluation.views import evaluation_cameras
from bundled.world.objects import COLOURS, OBJECTS, parse_prompt
from bundled.world.render import render_object
from framework.cameras.camera import CameraBatch
from framework.guidance.prompts import VIEWS
from framework.utils.atomic import atomic_path

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


def evaluate_run(run_dir: str | Path, n_views: int = 8, resolution: int = 64, asset: str | Path = ASSET) -> dict:
    """Render RUN_DIR/`asset` (export/model.glb) and the prompt's true object from
    `evaluation_cameras` and write RUN_DIR/eval.json (eval_<folder>.json for another asset, e.g.
    eval_coarse.json for Magic3D's export/coarse/model.glb): per-view mask IoU and colour error
    (mean absolute RGB difference where both masks cover the pixel; null where they do not
    overlap), their means, the prompt, the dominant colour: the world colour whose true object's
    mean colour is nearest the asset's in most views (`colour_right` says whether it is the
    prompt's), whether the surface is watertight once the copies of vertices along UV seams are
    merged (`watertight`), the glTF metallic-roughness maps it carries (`pbr_maps`), and for
    objects with a front the Janus measure (`view_accuracy`, see `view_accuracy`; null otherwise).

    Returns:
        The dict written to eval.json.

    Raises:
        FileNotFoundError: the config or the asset is missing.
        ValueError: the prompt names no object of the bundled world.
    """
    run_dir = Path(run_dir)
    prompt = read_prompt(run_dir)
    colour, object_name = parse_prompt(prompt)
    asset_path = Path(asset)
    watertight, pbr_maps = surface_facts(run_dir / asset_path)
    asset = load_asset(run_dir / asset_path)
    cameras = evaluation_cameras(n_views, resolution)
    true_rgb, true_mask = render_object(OBJECTS[object_name], colour, cameras)
    rgb, mask = render_asset(asset, cameras)
    ious = mask_iou(mask, true_mask).tolist()
    errors = [None if math.isnan(e) else e for e in color_error(rgb, true_rgb, mask, true_mask).tolist()]
    defined = [e for e in errors if e is not None]
    dominant = dominant_colour(rgb, mask, object_name, cameras)
    janus = view_accuracy(asset, object_name) if OBJECTS[object_name].has_front else None
    result = {
        "prompt": prompt,
        "asset": str(asset_path),
        "n_views": n_views,
        "resolution": resolution,
        "mask_iou_mean": sum(ious) / len(ious),
        "color_error_mean": sum(defined) / len(defined) if defined else None,
        "dominant_colour": dominant,
        "colour_right": dominant == colour,
        "watertight": watertight,
        "pbr_maps": pbr_maps,
        "view_accuracy": janus["view_accuracy"] if janus else None,
        "janus_views": janus["views"] if janus else None,
        "views": [
            {"elevation": float(e), "azimuth": float(a), "mask_iou": iou, "color_error": error}
            for e, a, iou, error in zip(cameras.elevation_deg, cameras.azimuth_deg, ious, errors)
        ],
    }
    with atomic_path(run_dir / eval_name(asset_path)) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    return result


def view_accuracy(asset: object, object_name: str) -> dict:
    """The Janus measure of an asset of an object with a front (`bundled.evaluation.janus`): the
    share of 12 renders near its front and back that the front/back judge puts on the camera's
    side, and each render's verdict."""
    cameras, sides = janus_cameras()
    renders, _ = render_asset(asset, cameras)
    verdicts = view_verdicts(renders, object_name)
    return {
        "view_accuracy": float((verdicts == sides).float().mean()),
        "views": [
            {"elevation": float(e), "azimuth": float(a), "side": VIEWS[int(s)], "judged": VIEWS[int(v)]}
            for e, a, s, v in zip(cameras.elevation_deg, cameras.azimuth_deg, sides, verdicts)
        ],
    }


def eval_name(asset: Path) -> str:
    """eval.json for the default asset, eval_<its folder>.json for another."""
    return "eval.json" if asset == Path(ASSET) else f"eval_{asset.parent.name or asset.stem}.json"


def surface_facts(path: Path) -> tuple[bool, list[str]]:
    """(watertight once vertices at one position are merged, which glTF metallic-roughness maps
    the material has) of a GLB or OBJ."""
    import trimesh

    if not path.is_file():
        raise FileNotFoundError(f"asset {path} does not exist")
    mesh = trimesh.load(path, force="mesh")
    material = getattr(mesh.visual, "material", None)
    maps = [name for name in ("baseColorTexture", "metallicRoughnessTexture", "normalTexture") if getattr(material, name, None) is not None]
    mesh.merge_vertices(merge_tex=True, merge_norm=True)
    return bool(mesh.is_watertight), maps


def dominant_colour(rgb: Tensor, mask: Tensor, object_name: str, cameras: CameraBatch) -> str | None:
    """The world colour most views of an asset's renders `rgb` [V, H, W, 3] (coverage `mask`) are
    nearest to, each view compared with the true object in every colour from the same camera
    (shading darkens the colours, so plain RGB values would not do). None if no view shows it."""
    references = torch.stack([mean_colour(*render_object(OBJECTS[object_name], name, cameras)) for name in COLOURS], dim=1)
    votes = classify_colour(rgb, mask, references)
    votes = votes[votes != UNCLASSIFIED]
    return list(COLOURS)[int(votes.mode().values)] if votes.numel() else None
