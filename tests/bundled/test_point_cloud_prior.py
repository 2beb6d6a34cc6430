"""The bundled point-cloud prior: surface samples, text encoder, folder round trip, training
(exact resume) and the evaluation (finite on a random prior, perfect on the truth)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import evaluate_point_cloud_prior as evaluate_script  # noqa: E402
import train_point_cloud_prior  # noqa: E402

from bundled.evaluation.point_cloud_prior import chamfer_distance, evaluate_point_cloud_prior  # noqa: E402
from framework.guidance.point_cloud_sampling import sample_point_clouds  # noqa: E402
from bundled.prior.point_cloud_model import CHANNEL_BIASES, CHANNEL_SCALES, CONVENTION, PointCloudPriorArchitecture, build_point_cloud_model, build_text_encoder  # noqa: E402
from framework.guidance.point_cloud_prior import from_model_space, load_point_cloud_prior, save_point_cloud_prior, to_model_space  # noqa: E402
from bundled.prior.point_cloud_training import PAIRS, X0_WEIGHT_CAP, draw_batch, epsilon_loss  # noqa: E402
from bundled.world.objects import COLOURS, OBJECTS, caption, parse_prompt  # noqa: E402
from bundled.world.point_clouds import surface_points  # noqa: E402
from framework.guidance.point_e import point_e_scheduler  # noqa: E402

TINY = PointCloudPriorArchitecture(width=16, layers=1, heads=2, text_dim=8, points=32)
TINY_FLAGS = ["--width", "16", "--layers", "1", "--heads", "2", "--text-dim", "8", "--points", "32"]


@pytest.fixture(scope="module")
def tiny_point_prior(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_point_prior")
    save_point_cloud_prior(folder, build_point_cloud_model(TINY), build_text_encoder(TINY), CONVENTION, {"test": True})
    return folder


@pytest.mark.parametrize("name", ["snowman", "house", "mug", "cone"])
def test_surface_points_lie_on_the_surface_and_carry_their_part_colours(name):
    obj = OBJECTS[name]
    xyz, rgb = surface_points(obj, "blue", 2000, torch.Generator().manual_seed(0))
    distance, part = obj.evaluate(xyz)
    assert xyz.shape == rgb.shape == (2000, 3)
    assert distance.abs().max() < 1e-2 and distance.abs().mean() < 1e-4
    assert torch.equal(rgb, obj.part_colours("blue")[part])
    assert (rgb == torch.tensor(COLOURS["blue"])).all(dim=1).float().mean() > 0.5  # mostly the prompted colour
    again, _ = surface_points(obj, "blue", 2000, torch.Generator().manual_seed(0))
    other, _ = surface_points(obj, "blue", 2000, torch.Generator().manual_seed(1))
    assert torch.equal(xyz, again) and not torch.equal(xyz, other)


def test_surface_points_are_uniform_by_area():
    # Archimedes: on a sphere the height z is uniform, so a quarter of the points lie above r/2;
    # on a cube each face gets a sixth.
    xyz, _ = surface_points(OBJECTS["sphere"], "red", 8000, torch.Generator().manual_seed(0))
    assert abs((xyz[:, 2] > 0.31).float().mean() - 0.25) < 0.02
    xyz, _ = surface_points(OBJECTS["cube"], "red", 6000, torch.Generator().manual_seed(0))
    axis = xyz.abs().argmax(dim=1) * 2 + (xyz.gather(1, xyz.abs().argmax(dim=1, keepdim=True))[:, 0] > 0)
    assert (torch.bincount(axis, minlength=6).float() / 6000 - 1 / 6).abs().max() < 0.02


def test_the_text_encoder_is_unit_norm_tells_the_captions_apart_and_ignores_unknown_words():
    encoder = build_text_encoder(PointCloudPriorArchitecture())
    captions = [caption(c, o) for c, o in PAIRS]
    embeddings = encoder.encode(captions)
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(len(captions)))
    cosine = embeddings @ embeddings.T
    assert cosine[~torch.eye(len(captions), dtype=torch.bool)].max() < 0.99
    same = encoder.encode(["a red mug", "A red mug, front view", "", "zebra"])
    torch.testing.assert_close(same[0], same[1])
    assert not same[2].any() and not same[3].any()  # nothing known: Point-E's unconditional zeros
    encoder.encode(["", "a red mug"]).sum().backward()  # the unconditional branch trains nothing
    gradient = encoder.embedding.weight.grad
    assert torch.isfinite(gradient).all() and not gradient[encoder.index["<unk>"]].any() and gradient.abs().max() < 10


def test_model_space_doubles_xyz_and_maps_rgb_to_plus_minus_one():
    xyz, rgb = torch.rand(2, 5, 3) - 0.5, torch.rand(2, 5, 3)
    points = to_model_space(xyz, rgb, CHANNEL_SCALES, CHANNEL_BIASES)
    assert points.shape == (2, 6, 5)
    torch.testing.assert_close(points[:, :3], 2 * xyz.transpose(1, 2))
    torch.testing.assert_close(points[:, 3:], 2 * rgb.transpose(1, 2) - 1)
    back = from_model_space(points, CHANNEL_SCALES, CHANNEL_BIASES)
    torch.testing.assert_close(back[0], xyz)
    torch.testing.assert_close(back[1], rgb)


def test_a_saved_prior_loads_with_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model, encoder = build_point_cloud_model(TINY), build_text_encoder(TINY)
    with torch.no_grad():  # the folder holds fp16: round first, so the round trip is exact
        for p in [*model.parameters(), *encoder.parameters()]:
            p.copy_(p.half().float())
    save_point_cloud_prior(tmp_path / "prior", model, encoder, CONVENTION, {"command": "test"})
    prior = load_point_cloud_prior(tmp_path / "prior")
    prompts = ["a red cube", "a blue snowman", ""]
    points, t = torch.randn(3, 6, 32), torch.tensor([0, 500, 1023])
    with torch.no_grad():
        assert torch.equal(prior.text_encoder.encode(prompts), encoder.encode(prompts))
        assert torch.equal(prior.model(points, t, encoder.encode(prompts)), model(points, t, encoder.encode(prompts)))
    assert set(load_file(tmp_path / "prior/model.safetensors")) == set(model.state_dict())  # Point-E's key names
    config = json.loads((tmp_path / "prior/config.json").read_text())
    assert config["width"] == 16 and config["clip_dim"] == 8 and config["channel_scales"] == list(CHANNEL_SCALES)
    assert prior.biases.tolist() == list(CHANNEL_BIASES) and prior.provenance == {"command": "test"}
    (tmp_path / "prior/text_encoder.json").unlink()
    with pytest.raises(FileNotFoundError, match="text_encoder.json is missing"):
        load_point_cloud_prior(tmp_path / "prior")


def test_the_x0_weighting_is_the_clean_cloud_error_capped():
    """weighting="x0": the epsilon error times (1 - alpha_bar) / alpha_bar, i.e. the squared error
    of the predicted clean cloud, capped at X0_WEIGHT_CAP for the noisiest timesteps."""
    torch.manual_seed(0)
    model, encoder = build_point_cloud_model(TINY), build_text_encoder(TINY)
    clean, captions = draw_batch(3, TINY.points, torch.Generator().manual_seed(0), 0.0)
    scheduler = point_e_scheduler()
    with torch.no_grad():
        weighted = epsilon_loss(model, encoder, scheduler, clean, captions, torch.Generator().manual_seed(1), "x0")
        generator = torch.Generator().manual_seed(1)  # replay its draws
        t = torch.randint(1024, (3,), generator=generator)
        noise = torch.randn(clean.shape, generator=generator)
        a = scheduler.alphas_cumprod[t].view(-1, 1, 1)
        noisy = a.sqrt() * clean + (1 - a).sqrt() * noise
        x0 = (noisy - (1 - a).sqrt() * model(noisy, t, encoder.encode(captions))[:, :6]) / a.sqrt()
        x0_error = ((x0 - clean) ** 2).mean(dim=(1, 2))
        capped = torch.where((1 - a.view(-1)) / a.view(-1) > X0_WEIGHT_CAP, X0_WEIGHT_CAP * a.view(-1) / (1 - a.view(-1)), torch.ones(3))
    torch.testing.assert_close(weighted, (x0_error * capped).mean(), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="weighting='snr'"):
        epsilon_loss(model, encoder, scheduler, clean, captions, torch.Generator(), "snr")


def test_a_few_steps_on_a_fixed_batch_lower_the_epsilon_loss():
    torch.manual_seed(0)
    model, encoder = build_point_cloud_model(TINY), build_text_encoder(TINY)
    clean, captions = draw_batch(4, TINY.points, torch.Generator().manual_seed(0), 0.0)
    optimizer = torch.optim.AdamW([*model.parameters(), *encoder.parameters()], lr=3e-3)
    scheduler = point_e_scheduler()
    losses = []
    for _ in range(15):
        loss = epsilon_loss(model, encoder, scheduler, clean, captions, torch.Generator().manual_seed(1))  # same t and noise
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert clean.shape == (4, 6, TINY.points) and clean[:, 3:].abs().max() <= 1
    assert losses[-1] < 0.8 * losses[0]


def test_interrupted_training_resumes_exactly_and_exports_a_loadable_prior(tmp_path):
    common = ["--steps", "3", "--batch-size", "2", "--warmup-steps", "1", "--checkpoint-every", "1000", "--device", "cpu", *TINY_FLAGS]
    train_point_cloud_prior.main(["--work-dir", str(tmp_path / "straight"), "--export-dir", str(tmp_path / "straight/export"), *common])
    interrupted = ["--work-dir", str(tmp_path / "stopped"), "--export-dir", str(tmp_path / "stopped/export"), *common]
    train_point_cloud_prior.main([*interrupted, "--stop-at-step", "1"])
    assert int(torch.load(tmp_path / "stopped/checkpoint.pt", weights_only=True)["step"]) == 1
    assert not (tmp_path / "stopped/export").exists()
    train_point_cloud_prior.main(interrupted)
    for part in ("model.safetensors", "text_encoder.safetensors"):
        straight, resumed = load_file(tmp_path / "straight/export" / part), load_file(tmp_path / "stopped/export" / part)
        assert straight.keys() == resumed.keys()
        assert all(torch.equal(straight[key], resumed[key]) for key in straight), part
    provenance = json.loads((tmp_path / "stopped/export/provenance.json").read_text())
    assert provenance["steps"] == 3 and provenance["seed"] == 0 and "date" in provenance and "git_commit" in provenance
    assert len(provenance["history"]) == 2 and "--stop-at-step 1" in provenance["history"][0]
    assert load_point_cloud_prior(tmp_path / "stopped/export").model.config.n_ctx == TINY.points


def test_a_run_started_from_a_prior_on_fewer_points_begins_at_its_weights(tmp_path):
    common = ["--batch-size", "2", "--warmup-steps", "1", "--device", "cpu", *TINY_FLAGS]
    train_point_cloud_prior.main(["--work-dir", str(tmp_path / "few"), "--export-dir", str(tmp_path / "few/export"), "--steps", "2", *common])
    more_points = [flag if flag != str(TINY.points) else str(2 * TINY.points) for flag in TINY_FLAGS]
    finer = ["--work-dir", str(tmp_path / "many"), "--export-dir", str(tmp_path / "many/export"), "--init-from", str(tmp_path / "few/export"), *common[:-len(TINY_FLAGS)], *more_points]
    train_point_cloud_prior.main([*finer, "--steps", "1", "--lr", "0"])
    source, started = load_point_cloud_prior(tmp_path / "few/export"), load_point_cloud_prior(tmp_path / "many/export")
    assert started.model.config.n_ctx == 2 * TINY.points
    assert all(torch.equal(a, b) for a, b in zip(source.model.state_dict().values(), started.model.state_dict().values()))
    assert started.provenance["history"][:-1] == [*source.provenance["history"], f"(fine-tuned from the point prior at {tmp_path / 'few/export'})"]


def test_a_start_from_a_prior_of_other_sizes_is_refused(tmp_path):
    train_point_cloud_prior.main(["--work-dir", str(tmp_path / "a"), "--export-dir", str(tmp_path / "a/export"), "--steps", "1", "--batch-size", "2", "--device", "cpu", *TINY_FLAGS])
    wider = [flag if flag != str(TINY.width) else str(2 * TINY.width) for flag in TINY_FLAGS]
    with pytest.raises(SystemExit, match="--init-from=.*differ"):
        train_point_cloud_prior.main(["--work-dir", str(tmp_path / "b"), "--init-from", str(tmp_path / "a/export"), "--steps", "1", "--device", "cpu", *wider])


@pytest.mark.parametrize(
    "script, argv, named",
    [
        (train_point_cloud_prior, ["--steps", "0"], "--steps=0 must be positive"),
        (train_point_cloud_prior, ["--width", "10", "--heads", "4"], "--width=10 must be a multiple of --heads=4"),
        (train_point_cloud_prior, ["--caption-dropout", "1.5"], "--caption-dropout=1.5"),
        (train_point_cloud_prior, ["--ema-decay", "1"], "--ema-decay=1.0 must be in [0, 1)"),
        (train_point_cloud_prior, ["--lr", "-1"], "--lr=-1.0 and --warmup-steps=100 must be 0 or more"),
        (evaluate_script, ["--steps", "0"], "--steps=0 must be positive"),
        (evaluate_script, ["--objects", "cube", "cube"], "names one twice"),
        (evaluate_script, ["--objects", "teapot"], "'teapot'"),
    ],
)
def test_bad_arguments_exit_with_one_line(capsys, script, argv, named):
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args(argv)
    assert exit_info.value.code == 2 and named in capsys.readouterr().err


def test_evaluating_a_missing_prior_exits_with_one_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        evaluate_script.main(["--prior", str(tmp_path), "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and error.startswith("error: point prior folder") and "\n" not in error


def test_the_evaluation_of_a_random_prior_runs_and_gives_finite_scores(tiny_point_prior, tmp_path, capsys):
    argv = ["--prior", str(tiny_point_prior), "--objects", "sphere", "cube", "--colours", "red", "--steps", "2", "--reference-points", "64", "--device", "cpu", "--out", str(tmp_path)]
    evaluate_script.main(argv)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n_samples"] == 2 and math.isfinite(summary["chamfer_mean"])
    assert 0 <= summary["right_object_share"] <= 1 and 0 <= summary["colour_share"] <= 1
    report = json.loads((tmp_path / "point_cloud_prior_eval.json").read_text())
    assert set(report["per_caption"]) == {"a red sphere", "a red cube"}
    prior = load_point_cloud_prior(tiny_point_prior)
    xyz, rgb = sample_point_clouds(prior, ["a red cube", ""], torch.Generator().manual_seed(0), steps=2, points=16)
    again, _ = sample_point_clouds(prior, ["a red cube", ""], torch.Generator().manual_seed(0), steps=2, points=16, batch_size=1)
    assert xyz.shape == (2, 16, 3)
    torch.testing.assert_close(xyz, again)  # the batch size bounds memory only
    assert xyz.abs().max() <= 1.0 + 1e-6 and 0 <= rgb.min() and rgb.max() <= 1  # clipped to the unit box, rgb 0..1


def test_true_surface_samples_score_perfectly():
    generator = torch.Generator().manual_seed(7)

    def oracle(prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        clouds = [surface_points(OBJECTS[parse_prompt(p)[1]], parse_prompt(p)[0], 512, generator) for p in prompts]
        return torch.stack([c[0] for c in clouds]), torch.stack([c[1] for c in clouds])

    result = evaluate_point_cloud_prior(oracle, colours=("green", "pink"), reference_points=1024)
    summary = result["summary"]
    assert summary["right_object_share"] == 1.0 and summary["colour_share"] == 1.0 and summary["n_samples"] == 18
    assert summary["chamfer_mean"] < 0.05  # the sampling-density floor (~0.04 at 512 points), not 0
    a = torch.rand(1, 50, 3)
    assert chamfer_distance(a, a).item() == 0.0
