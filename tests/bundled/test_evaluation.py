"""Ground truth and evaluation tools: asset rendering, metrics, scripts and the prior's scorer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bundled.evaluation.asset import MeshAsset, load_asset, render_asset
from bundled.evaluation.metrics import (
    UNCLASSIFIED,
    candidate_distances,
    classify_colour,
    color_error,
    foreground_mask,
    mask_iou,
)
from bundled.evaluation.prior import PriorPrompt, ReferenceGrid, build_normal_map_references, evaluate_prior, prompted_is_nearest, score_normal_maps
from bundled.evaluation.run import view_accuracy, evaluate_run
from bundled.evaluation.views import evaluation_cameras
from bundled.prior.sampling import load_prior, sample_images
from bundled.world.objects import OBJECTS, parse_prompt
from bundled.world.render import object_mesh, render_normal_map, render_object
from framework.cameras.camera import CameraBatch
from framework.cameras.distribution import orbit_ring
from framework.export.mesh_io import Texture, load_mesh_zup, write_glb

ROOT = Path(__file__).resolve().parents[2]


def _asset_of(obj_name: str, colour: str, resolution: int = 96) -> MeshAsset:
    mesh = object_mesh(OBJECTS[obj_name], colour, resolution=resolution)
    return MeshAsset(
        torch.as_tensor(mesh.vertices, dtype=torch.float32),
        torch.as_tensor(mesh.faces, dtype=torch.long),
        colours=torch.as_tensor(mesh.visual.vertex_colors[:, :3], dtype=torch.float32) / 255.0,
    )


def _write_glb(path: Path, obj_name: str, colour: str) -> None:
    """The object's mesh as a vertex-coloured GLB, written the way runs export theirs."""
    mesh = object_mesh(OBJECTS[obj_name], colour, resolution=64)
    write_glb(path, mesh.vertices, mesh.faces, vertex_colors=mesh.visual.vertex_colors[:, :3] / 255.0)


# --- asset rendering --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cube", "mug"])
def test_rasterized_mesh_matches_sphere_tracer(name):
    cameras = orbit_ring(3, 25.0, 2.8, 42.0, 64, start_azimuth_deg=20.0)
    true_rgb, true_mask = render_object(OBJECTS[name], "red", cameras)
    rgb, mask = render_asset(_asset_of(name, "red"), cameras)
    assert (mask_iou(mask, true_mask) > 0.95).all()
    assert (color_error(rgb, true_rgb, mask, true_mask) < 0.05).all()


# --- metrics, views and axes ------------------------------------------------------------------


def test_metrics_on_hand_made_masks():
    a = torch.zeros(2, 8, 8)
    b = torch.zeros(2, 8, 8)
    a[0, :4, :4] = 1.0  # 16 pixels
    b[0, :4, 2:6] = 0.7  # 16 pixels, 8 shared
    iou = mask_iou(a, b)
    assert iou[0] == pytest.approx(8 / 24) and iou[1] == 1.0  # both empty: identical
    assert mask_iou(a[0], a[0] * 0.4) == 0.0  # soft coverage below 0.5 is background

    red = torch.ones(2, 8, 8, 3)
    red[..., 1:] = 0.0
    dark = red * 0.5
    errors = color_error(dark, red, a, b)
    assert errors[0] == pytest.approx(0.5 / 3) and errors[1].isnan()  # no overlap: undefined
    assert color_error(torch.ones(2, 8, 8, 3), red, a, b, region="target")[0] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="region='union'"):
        color_error(dark, red, a, b, region="union")

    image = torch.ones(8, 8, 3)
    image[2:5, 2:5] = torch.tensor([0.9, 0.8, 0.1])
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[2:5, 2:5] = True
    assert torch.equal(foreground_mask(image), expected)

    references = torch.tensor([[0.9, 0.1, 0.1], [0.9, 0.8, 0.1], [0.1, 0.2, 0.9]])
    images = torch.stack([image, torch.ones(8, 8, 3)])
    assert classify_colour(images, foreground_mask(images), references).tolist() == [1, UNCLASSIFIED]


def test_candidate_distances_and_ties():
    """Each candidate's nearest view counts (uint8 candidates are read as /255); a view equally
    near two candidates is right for either."""
    front, back = torch.zeros(2, 4, 4, 3), torch.ones(3, 4, 4, 3)
    front[1] = 0.2
    images = torch.stack([torch.full((4, 4, 3), 0.15), torch.full((4, 4, 3), 0.9)])
    distances = candidate_distances(images, [front, (back * 255).to(torch.uint8)])
    torch.testing.assert_close(distances, torch.tensor([[0.05, 0.85], [0.7, 0.1]]) * (4 * 4 * 3) ** 0.5)
    assert prompted_is_nearest(images, [front, back], torch.tensor([0, 1])).tolist() == [True, True]
    assert prompted_is_nearest(images, [front, back], torch.tensor([1, 0])).tolist() == [False, False]
    grey, darker, lighter = torch.full((1, 4, 4, 3), 0.5), torch.full((1, 4, 4, 3), 0.25), torch.full((2, 4, 4, 3), 0.75)
    assert prompted_is_nearest(grey.expand(2, -1, -1, -1), [darker, lighter], torch.tensor([0, 1])).tolist() == [True, True]


def test_evaluation_cameras_cover_two_elevations_and_distinct_azimuths():
    cameras = evaluation_cameras(8, resolution=32)
    assert cameras.batch_size == 8 and cameras.height == cameras.width == 32
    assert sorted(cameras.elevation_deg.tolist()) == [15.0] * 4 + [50.0] * 4
    assert len(set(cameras.azimuth_deg.tolist())) == 8 and 0.0 in cameras.azimuth_deg.tolist()
    assert torch.allclose(cameras.position.norm(dim=-1), torch.full((8,), 2.8))
    assert evaluation_cameras(3).elevation_deg.tolist() == [15.0, 15.0, 50.0]
    with pytest.raises(ValueError, match="n_views=0"):
        evaluation_cameras(0)


def test_textured_glb_keeps_its_texture_orientation(tmp_path):
    # A quad facing the front (+x): texture's top half red, bottom half blue.
    vertices = np.array([[0.0, -0.5, -0.5], [0.0, 0.5, -0.5], [0.0, 0.5, 0.5], [0.0, -0.5, 0.5]], dtype=np.float32)
    image = np.zeros((8, 8, 3), np.uint8)
    image[:4] = [255, 0, 0]
    image[4:] = [0, 0, 255]
    uv = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    write_glb(tmp_path / "quad.glb", vertices, np.array([[0, 1, 2], [0, 2, 3]]), texture=Texture(uv, image))
    asset = load_asset(tmp_path / "quad.glb")
    assert asset.texture is not None and torch.allclose(asset.vertices, torch.from_numpy(vertices))
    rgb, mask = render_asset(asset, orbit_ring(1, 0.0, 2.8, 42.0, 32))
    top, bottom = rgb[0, 10, 16], rgb[0, 22, 16]
    assert top[0] > 0.5 and top[2] < 0.05 and bottom[2] > 0.5 and bottom[0] < 0.05 and mask[0, 16, 16] == 1.0


# --- scripts and the run evaluation -------------------------------------------------------------


def _run_script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_ground_truth_script_writes_views_masks_cameras_and_mesh(tmp_path):
    out = tmp_path / "gt"
    done = _run_script(
        "scripts/ground_truth.py", "--prompt", "a red mug", "--views", "2", "--out", str(out), "--resolution", "16"
    )
    assert done.returncode == 0, done.stderr
    for name in ("view_00.png", "view_01.png", "mask_00.png", "mask_01.png", "mesh.obj", "cameras.json"):
        assert (out / name).is_file(), name
    index = json.loads((out / "cameras.json").read_text())
    assert index["object"] == "mug" and index["colour"] == "red" and len(index["views"]) == 2
    view = index["views"][0]
    assert {"elevation", "azimuth", "distance", "fovy", "c2w", "resolution"} <= set(view)
    assert np.asarray(view["c2w"]).shape == (4, 4) and view["resolution"] == [16, 16]
    assert np.asarray(Image.open(out / "view_00.png")).shape == (16, 16, 3)
    mesh = load_mesh_zup(out / "mesh.obj")
    assert len(mesh.faces) > 100 and mesh.vertices[:, 2].max() > 0.4  # the mug's rim, back in z-up


def test_ground_truth_script_rejects_unknown_prompt_in_one_line(tmp_path):
    done = _run_script("scripts/ground_truth.py", "--prompt", "a green teapot", "--out", str(tmp_path / "gt"))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "a green teapot" in done.stderr
    assert not (tmp_path / "gt").exists()


@pytest.mark.parametrize("objects", [("mug", "teapot"), ("mug", "mug")])
def test_evaluate_prior_script_rejects_bad_objects_naming_them(tmp_path, objects):
    done = _run_script("scripts/evaluate_prior.py", "--objects", *objects, "--out", str(tmp_path / "eval"))
    assert done.returncode == 2
    assert "--objects" in done.stderr and objects[-1] in done.stderr.splitlines()[-1]
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("objects, colours, named", [(("mug", "teapot"), ("red",), r"unknown \['teapot'\]"), (("mug", "mug"), ("red",), r"repeated \['mug'\]"), (("mug",), ("red", "mauve"), r"unknown \['mauve'\]")])
def test_evaluate_prior_rejects_bad_names_before_sampling(objects, colours, named):
    def sampler(prompts):
        raise AssertionError("sampled before checking the names")

    with pytest.raises(ValueError, match=named):
        evaluate_prior(sampler, objects=objects, colours=colours)


def _fake_run(run_dir: Path, prompt: str, obj_name: str, colour: str) -> Path:
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (run_dir / ".hydra" / "config.yaml").write_text(f"prompt: {prompt}\nseed: 0\n")
    _write_glb(run_dir / "export" / "model.glb", obj_name, colour)
    return run_dir


def test_evaluate_run_scores_the_true_object_high_and_a_wrong_one_low(tmp_path):
    good = evaluate_run(_fake_run(tmp_path / "good", "a red cube", "cube", "red"), n_views=4)
    assert good["prompt"] == "a red cube" and len(good["views"]) == 4
    assert good["mask_iou_mean"] > 0.9 and good["color_error_mean"] < 0.05
    assert good["dominant_colour"] == "red" and good["colour_right"]
    written = json.loads((tmp_path / "good" / "eval.json").read_text())
    assert written["mask_iou_mean"] == pytest.approx(good["mask_iou_mean"])

    bad = evaluate_run(_fake_run(tmp_path / "bad", "a red cube", "sphere", "blue"), n_views=4)
    assert bad["mask_iou_mean"] < good["mask_iou_mean"] - 0.05
    assert bad["color_error_mean"] > 0.2
    assert bad["dominant_colour"] == "blue" and not bad["colour_right"]
    orange = evaluate_run(_fake_run(tmp_path / "orange", "a red cube", "cube", "orange"), n_views=4)
    assert orange["dominant_colour"] == "orange" and not orange["colour_right"]


@pytest.mark.parametrize("name", ["mug", "house", "snowman"])
def test_the_janus_measure_gives_true_objects_full_marks_and_turned_ones_none(name):
    """The true asset shows its front from the front (the judge agrees on all 12 views); the same
    asset turned by 180 degrees shows its back there, and every verdict flips."""
    asset = _asset_of(name, "green")
    assert view_accuracy(asset, name)["view_accuracy"] == 1.0
    turn = torch.tensor([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]])
    turned = MeshAsset(asset.vertices @ turn.T, asset.faces, colours=asset.colours)
    assert view_accuracy(turned, name)["view_accuracy"] == 0.0


def test_evaluate_run_reports_view_accuracy_only_for_objects_with_a_front(tmp_path):
    assert evaluate_run(_fake_run(tmp_path / "mug", "a cyan mug", "mug", "cyan"), n_views=2)["view_accuracy"] == 1.0
    assert evaluate_run(_fake_run(tmp_path / "cube", "a red cube", "cube", "red"), n_views=2)["view_accuracy"] is None


def test_evaluate_run_explains_a_missing_asset(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("prompt: a red cube\n")
    with pytest.raises(FileNotFoundError, match="model.glb"):
        evaluate_run(tmp_path, n_views=2)


# --- the prior: scoring, sampling and loading ----------------------------------------------------


def test_prior_scorer_gives_ground_truth_full_marks():
    """Ground-truth renders as "samples", from views between the reference views (a check of the
    scorer and its prompt bookkeeping, not of any model)."""
    grid = ReferenceGrid(elevations_deg=(10.0, 40.0), n_azimuths=8, distances=(2.8,))
    offsets = {"front": 10.0, "back": 190.0, None: 50.0}

    def sample(prompts: list[str]) -> torch.Tensor:
        images = []
        for prompt in prompts:
            colour, name = parse_prompt(prompt)
            view = next((v for v in ("front", "back") if prompt.endswith(f"{v} view")), None)
            camera = CameraBatch.from_orbit(
                torch.tensor([15.0]), torch.tensor([offsets[view]]), torch.tensor([2.75]), torch.tensor([42.5]), 32
            )
            images.append(render_object(OBJECTS[name], colour, camera)[0])
        return torch.cat(images)

    result = evaluate_prior(sample, objects=("cube", "sphere", "mug", "house"), colours=("red", "blue"), grid=grid)
    summary = result.summary
    assert summary["color_accuracy"] == summary["shape_accuracy"] == summary["view_accuracy"] == 1.0
    assert summary["n_samples"] == 8 and summary["n_view_samples"] == 8
    assert result.grid.shape == (4, 2, 32, 32, 3) and result.view_grid.shape == (4, 2, 32, 32, 3)
    assert set(result.per_object["mug"]) == {"color_accuracy", "shape_accuracy", "view_accuracy"}


def test_normal_map_scorer_gives_true_normal_maps_full_marks_and_wrong_objects_none():
    """True normal maps from views between the reference views are judged right; normal maps of
    another object are judged wrong (a check of the scorer and its bookkeeping)."""
    grid = ReferenceGrid(elevations_deg=(10.0, 40.0), n_azimuths=8, distances=(2.8,))
    camera = CameraBatch.from_orbit(torch.tensor([15.0]), torch.tensor([50.0]), torch.tensor([2.75]), torch.tensor([42.5]), 32)
    seen: list[str] = []

    def sample(kind: str):
        def draw(prompts: list[str]) -> torch.Tensor:
            images = []
            for prompt in prompts:
                colour, name = parse_prompt(prompt)
                if prompt.startswith("a normal map of"):
                    seen.append(prompt)
                    shown = name if kind == "true" else objects[(objects.index(name) + 1) % len(objects)]
                    images.append(render_normal_map(OBJECTS[shown], camera)[0])
                else:
                    images.append(render_object(OBJECTS[name], colour, camera)[0])
            return torch.cat(images)

        return draw

    objects = ("cube", "sphere", "cone", "torus")
    good = evaluate_prior(sample("true"), objects=objects, colours=("red", "blue"), grid=grid, with_views=False, with_normal_maps=True)
    assert good.summary["normal_map_shape_accuracy"] == 1.0 and good.summary["n_normal_map_samples"] == 8
    assert seen[0] == "a normal map of a red cube" and good.normal_map_grid.shape == (4, 2, 32, 32, 3)
    bad = evaluate_prior(sample("wrong"), objects=objects, colours=("red", "blue"), grid=grid, with_views=False, with_normal_maps=True)
    assert bad.summary["normal_map_shape_accuracy"] == 0.0


def test_a_normal_map_a_mug_shares_with_a_cylinder_counts_for_either():
    """As normal maps, some of a cylinder's reference views and a mug's whose handle is hidden are
    the same images (the grid's distances absorb their sizes). Such a view is a tie, which a strict
    nearest-reference judge calls wrong for both; it is right for either prompt, and still wrong
    for another object."""
    objects = ["cube", "cylinder", "mug"]
    references = build_normal_map_references(objects)
    cylinder, mug = references[1].flatten(1), references[2].flatten(1)
    shared = (cylinder[:, None] == mug[None]).all(dim=-1).any(dim=1).nonzero()[0, 0]
    view = references[1][shared : shared + 1].float() / 255.0
    cube, cylinder_distance, mug_distance = candidate_distances(view, list(references))[0].tolist()
    assert cylinder_distance == mug_distance == 0.0 < cube
    prompts = [PriorPrompt("red", name) for name in ("cylinder", "mug", "cube")]
    assert score_normal_maps(view.expand(3, -1, -1, -1), prompts, objects, references).tolist() == [True, True, False]


def test_sample_images_shape_range_and_determinism(tiny_pixel_prior):
    prior = load_prior(tiny_pixel_prior)
    assert not prior.unet.training and prior.unet.dtype == torch.float32
    prompts = ["a red cube", "a blue mug, front view", "a green torus"]
    first = sample_images(prior, prompts, torch.Generator().manual_seed(3), steps=3)
    again = sample_images(prior, prompts, torch.Generator().manual_seed(3), steps=3, batch_size=2)
    other = sample_images(prior, prompts, torch.Generator().manual_seed(4), steps=3)
    assert first.shape == (3, 32, 32, 3)
    assert first.min() >= 0.0 and first.max() <= 1.0
    assert torch.allclose(first, again, atol=1e-5)
    assert not torch.allclose(first, other)


def test_stochastic_sampling_is_seeded_and_differs_from_ddim(tiny_pixel_prior):
    prior = load_prior(tiny_pixel_prior)
    prompts = ["a red cube", "a green torus"]
    ddim = sample_images(prior, prompts, torch.Generator().manual_seed(3), steps=3)
    noisy = sample_images(prior, prompts, torch.Generator().manual_seed(3), steps=3, eta=1.0)
    again = sample_images(prior, prompts, torch.Generator().manual_seed(3), steps=3, eta=1.0)
    assert torch.equal(noisy, again) and not torch.allclose(noisy, ddim)
    with pytest.raises(ValueError, match="eta=1.5"):
        sample_images(prior, prompts, torch.Generator(), steps=3, eta=1.5)


def test_trailing_spacing_starts_from_the_last_timestep(tiny_pixel_prior, monkeypatch):
    prior = load_prior(tiny_pixel_prior)
    seen = []
    forward = prior.unet.forward
    monkeypatch.setattr(prior.unet, "forward", lambda x, t, **kwargs: seen.append(int(t)) or forward(x, t, **kwargs))
    trailing = sample_images(prior, ["a red cube"], torch.Generator().manual_seed(3), steps=4)
    assert seen == [999, 749, 499, 249]
    seen.clear()
    leading = sample_images(prior, ["a red cube"], torch.Generator().manual_seed(3), steps=4, timestep_spacing="leading")
    assert seen == [750, 500, 250, 0] and not torch.allclose(trailing, leading)
    with pytest.raises(ValueError, match="timestep_spacing='linspace'"):
        sample_images(prior, ["a red cube"], torch.Generator(), steps=4, timestep_spacing="linspace")


def test_guidance_interval_guides_only_the_steps_below_it(tiny_pixel_prior, monkeypatch):
    prior = load_prior(tiny_pixel_prior)
    prompts = ["a red cube", "a green torus"]
    seen = []
    forward = prior.unet.forward
    monkeypatch.setattr(prior.unet, "forward", lambda x, t, **kwargs: seen.append((int(t), x.shape[0])) or forward(x, t, **kwargs))
    interval = sample_images(prior, prompts, torch.Generator().manual_seed(3), steps=4, guidance_scale=3.0, guidance_below_t=600)
    assert seen == [(999, 2), (749, 2), (499, 4), (249, 4)]  # conditional only, then with the unconditional half
    everywhere = sample_images(prior, prompts, torch.Generator().manual_seed(3), steps=4, guidance_scale=3.0, guidance_below_t=None)
    assert not torch.allclose(interval, everywhere)
    # Scale 1 is the conditional prediction with or without the unconditional pass.
    plain = sample_images(prior, prompts, torch.Generator().manual_seed(3), steps=4, guidance_scale=1.0, guidance_below_t=None)
    plain_interval = sample_images(prior, prompts, torch.Generator().manual_seed(3), steps=4, guidance_scale=1.0, guidance_below_t=600)
    torch.testing.assert_close(plain, plain_interval, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="guidance_below_t=0"):
        sample_images(prior, prompts, torch.Generator(), steps=4, guidance_below_t=0)


def test_load_prior_names_the_missing_subfolder(tiny_pixel_prior, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_pixel_prior, broken)
    shutil.rmtree(broken / "scheduler")
    with pytest.raises(FileNotFoundError, match=r"broken is incomplete: subfolder 'scheduler' is missing"):
        load_prior(broken)
