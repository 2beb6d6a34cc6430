"""The bundled novel-view prior: its pairs of renders, the held-out pairs, the warm start from the
text prior, and its training script (exact resume, an export the guidance loads)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import train_novel_view_prior  # noqa: E402

from bundled.evaluation.novel_view_prior import TARGET_VIEWS, score_novel_view_prior, summarise, target_cameras  # noqa: E402
from bundled.prior.dataset import COLOUR_NAMES, OBJECT_NAMES  # noqa: E402
from bundled.prior.image_encoder_pretraining import pretrain_image_encoder  # noqa: E402
from bundled.prior.novel_view_model import NovelViewArchitecture, build_image_encoder, build_unet_for_views, warm_start_from_text_prior  # noqa: E402
from bundled.prior.sampling import load_prior  # noqa: E402
from bundled.prior.view_pairs import HELD_OUT, SEEN, draw_pairs, render_view_groups, training_pairs  # noqa: E402
from framework.cameras.batch import ReferenceView  # noqa: E402
from framework.cameras.camera import CameraBatch  # noqa: E402
from framework.cameras.distribution import OrbitDistribution  # noqa: E402
from framework.guidance.condition import Condition  # noqa: E402
from framework.guidance.novel_view import NovelViewGuidance  # noqa: E402
from tests.conftest import TINY_PIXEL  # noqa: E402


def test_one_pair_per_object_is_held_out_and_never_trained_on():
    assert sorted(o for _, o in HELD_OUT) == sorted(OBJECT_NAMES)
    assert set(COLOUR_NAMES) == {c for c, _ in HELD_OUT}
    pairs = training_pairs()
    assert len(pairs) == len(COLOUR_NAMES) * len(OBJECT_NAMES) - len(HELD_OUT)
    held = {(COLOUR_NAMES.index(c), OBJECT_NAMES.index(o)) for c, o in HELD_OUT}
    assert not held & set(pairs)
    data = render_view_groups(40, 2, 8, seed=0)
    assert not held & {(int(c), int(o)) for c, o in zip(data.colour, data.object)}


def test_the_seen_pairs_are_one_trained_on_pair_per_object():
    assert sorted(o for _, o in SEEN) == sorted(OBJECT_NAMES)
    assert {(COLOUR_NAMES.index(c), OBJECT_NAMES.index(o)) for c, o in SEEN} <= set(training_pairs())


def test_view_groups_show_one_object_from_different_cameras_deterministically():
    data = render_view_groups(3, 4, 16, seed=1)
    again = render_view_groups(3, 4, 16, seed=1)
    assert data.images.shape == (3, 4, 16, 16, 3) and torch.equal(data.images, again.images)
    assert (data.azimuth_deg[:, 0] != data.azimuth_deg[:, 1]).all()
    group, source, target = draw_pairs(data, 500, torch.Generator().manual_seed(0))
    assert (source != target).all() and set(target.tolist()) == set(range(4))
    cameras = data.cameras(group[:5], target[:5])
    torch.testing.assert_close(cameras.elevation_deg, data.elevation_deg[group[:5], target[:5]])
    with pytest.raises(ValueError, match="views=1 at least 2"):
        render_view_groups(3, 1, 16, seed=1)


def test_the_denoiser_starts_from_the_text_prior_with_the_input_view_channels_at_zero(tiny_pixel_prior):
    text_unet = load_prior(tiny_pixel_prior).unet
    unet = build_unet_for_views(NovelViewArchitecture(unet=TINY_PIXEL))
    warm_start_from_text_prior(unet, text_unet)
    torch.testing.assert_close(unet.conv_in.weight[:, :3], text_unet.conv_in.weight)
    assert not unet.conv_in.weight[:, 3:].any()
    for name, value in unet.state_dict().items():
        if name != "conv_in.weight":
            torch.testing.assert_close(value, text_unet.state_dict()[name], msg=name)


@pytest.mark.slow
def test_interrupted_training_resumes_exactly_and_exports_a_loadable_prior(tmp_path):
    common = ["--steps", "3", "--batch-size", "2", "--groups", "4", "--views", "2", "--resolution", "16", "--warmup-steps", "1", "--checkpoint-minutes", "1000", "--render-workers", "1", "--init-from", "none", "--encoder-pretrain-steps", "2"]
    train_novel_view_prior.main(["--work-dir", str(tmp_path / "straight"), "--export-dir", str(tmp_path / "straight/export"), *common])
    interrupted = ["--work-dir", str(tmp_path / "stopped"), "--export-dir", str(tmp_path / "stopped/export"), *common]
    train_novel_view_prior.main([*interrupted, "--stop-at-step", "1"])
    assert not (tmp_path / "stopped/export").exists()
    train_novel_view_prior.main(interrupted)
    for part in ("unet/diffusion_pytorch_model.safetensors", "image_encoder/model.safetensors", "cc_projection/diffusion_pytorch_model.safetensors"):
        straight, resumed = load_file(tmp_path / "straight/export" / part), load_file(tmp_path / "stopped/export" / part)
        assert straight.keys() == resumed.keys()
        for key in straight:
            assert torch.equal(straight[key], resumed[key]), f"{part}: {key}"
    provenance = json.loads((tmp_path / "stopped/export/provenance.json").read_text())
    assert provenance["held_out"] == [list(pair) for pair in HELD_OUT] and len(provenance["history"]) == 3
    assert provenance["history"][0].startswith("(image encoder pretrained as a classifier for 2 steps")

    guidance = NovelViewGuidance(str(tmp_path / "straight/export"), device="cpu", embedding_cache_dir=None)
    cameras = OrbitDistribution().sample(2, 16, torch.Generator().manual_seed(0))
    reference = ReferenceView(torch.rand(1, 16, 16, 3), torch.ones(1, 16, 16, 1), cameras.subset(slice(0, 1)))
    rgb = torch.rand(2, 16, 16, 3, requires_grad=True)
    guidance(rgb, Condition(cameras, None, reference), 0)["loss_sds"].backward()
    assert torch.isfinite(rgb.grad).all()


def test_the_pretrained_image_encoder_tells_colours_and_objects_apart_on_unseen_groups():
    data = render_view_groups(64, 2, 32, seed=3)
    encoder = build_image_encoder(NovelViewArchitecture(unet=TINY_PIXEL, image_width=64, image_layers=2, image_heads=2, patch_size=8))
    before = pretrain_image_encoder(copy.deepcopy(encoder), data, 1, 64, 2e-3, torch.Generator().manual_seed(0), validation_share=0.25)
    after = pretrain_image_encoder(encoder, data, 200, 64, 2e-3, torch.Generator().manual_seed(0), validation_share=0.25)
    assert after["colour_accuracy"] >= 0.7 > before["colour_accuracy"]
    assert after["object_accuracy"] >= 0.4 > before["object_accuracy"]  # chance: 1/8
    with pytest.raises(ValueError, match="validation_share=1.0"):
        pretrain_image_encoder(encoder, data, 1, 8, 1e-3, torch.Generator(), validation_share=1.0)


def test_bad_arguments_exit_with_one_line(capsys, tmp_path):
    for argv, named in ((["--views", "1"], "--views=1 must be at least 2"), (["--stop-at-step", "0"], "--stop-at-step=0 must be positive"), (["--time-limit-minutes", "-1"], "--time-limit-minutes=-1.0 must be 0 or more"), (["--checkpoint-minutes", "0"], "--checkpoint-minutes=0.0 must be positive"), (["--encoder-pretrain-steps", "-1"], "--encoder-pretrain-steps=-1"), (["--condition-dropout", "1"], "--condition-dropout=1.0"), (["--init-from", str(tmp_path)], f"--init-from={tmp_path}: no text prior there")):
        with pytest.raises(SystemExit) as exit_info:
            train_novel_view_prior.parse_args(argv)
        assert exit_info.value.code == 2 and named in capsys.readouterr().err


def test_the_scorer_compares_samples_with_the_true_renders_of_held_out_pairs(tiny_novel_view_prior):
    guidance = NovelViewGuidance(str(tiny_novel_view_prior), device="cpu", embedding_cache_dir=None)
    scores = score_novel_view_prior(guidance, n_random_inputs=1, steps=1, pairs=HELD_OUT[:1])
    assert [(s.colour, s.object) for s in scores] == [HELD_OUT[0]] * 2
    assert (scores[0].input_elevation_deg, scores[0].input_azimuth_deg) == (15.0, 0.0)
    assert all(len(s.mask_iou) == TARGET_VIEWS and all(0.0 <= v <= 1.0 for v in s.mask_iou) for s in scores)
    summary = summarise(scores)
    assert summary["samples"] == 2 * TARGET_VIEWS and 0.0 <= summary["colour_accuracy"] <= 1.0
    # The targets turn with the input view, so every input sees the same relative poses.
    turned = target_cameras(CameraBatch.from_orbit(torch.tensor([30.0]), torch.tensor([100.0]), torch.tensor([2.8]), torch.tensor([42.0]), 32), 32)
    front = target_cameras(CameraBatch.from_orbit(torch.tensor([15.0]), torch.tensor([0.0]), torch.tensor([2.8]), torch.tensor([42.0]), 32), 32)
    torch.testing.assert_close((turned.azimuth_deg - front.azimuth_deg) % 360.0, torch.full((TARGET_VIEWS,), 100.0))
