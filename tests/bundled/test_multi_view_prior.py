"""The bundled multi-view prior's training script: exact resume, and an export the multi-view
guidance loads; RichDreamer's normal-depth and albedo domains of it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import train_multi_view_prior  # noqa: E402

from bundled.evaluation.multi_view_prior import evaluate_multi_view_prior, judged_sides, score_normal_depth_views  # noqa: E402
from bundled.evaluation.prior import PriorPrompt, build_references, score_plain  # noqa: E402
from bundled.prior.dataset import COLOUR_NAMES, OBJECT_NAMES  # noqa: E402
from bundled.prior.model import PriorArchitecture  # noqa: E402
from bundled.prior.multi_view_model import DOMAIN_PRIOR_DIRS, MULTI_VIEW_PRIOR_DIR, build_multi_view_unet, inflate_text_prior, reads_camera_rays  # noqa: E402
from bundled.prior.sampling import load_prior  # noqa: E402
from bundled.prior.view_pairs import ViewGroups, render_view_groups  # noqa: E402
from bundled.world.objects import OBJECTS, caption  # noqa: E402
from bundled.world.render import render_normal_depth, render_object  # noqa: E402
from bundled.prior.weights import BUNDLED_PRIOR_DIR  # noqa: E402
from framework.cameras.camera import CameraBatch  # noqa: E402
from framework.cameras.distribution import OrbitDistribution  # noqa: E402
from framework.guidance.condition import Condition  # noqa: E402
from framework.guidance.multi_view import MultiViewPixelGuidance  # noqa: E402
from framework.guidance.multi_view_attention import set_multi_view_attention  # noqa: E402
from framework.guidance.prompts import VIEWS  # noqa: E402


@pytest.mark.slow
def test_interrupted_training_resumes_exactly_and_exports_a_loadable_prior(tmp_path):
    common = ["--steps", "3", "--batch-size", "4", "--sets", "3", "--dataset-size", "6", "--resolution", "16", "--warmup-steps", "1", "--multi-view-share", "0.5", "--checkpoint-minutes", "1000", "--render-workers", "1", "--init-from", str(BUNDLED_PRIOR_DIR)]
    train_multi_view_prior.main(["--work-dir", str(tmp_path / "straight"), "--export-dir", str(tmp_path / "straight/export"), *common])
    interrupted = ["--work-dir", str(tmp_path / "stopped"), "--export-dir", str(tmp_path / "stopped/export"), *common]
    train_multi_view_prior.main([*interrupted, "--stop-at-step", "1"])
    train_multi_view_prior.main(interrupted)
    straight = load_file(tmp_path / "straight/export/unet/diffusion_pytorch_model.safetensors")
    resumed = load_file(tmp_path / "stopped/export/unet/diffusion_pytorch_model.safetensors")
    assert straight.keys() == resumed.keys() and any(key.startswith("class_embedding.") for key in straight)
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    index = json.loads((tmp_path / "straight/export/model_index.json").read_text())
    assert index["_class_name"] == "BundledMultiViewPrior"

    further = ["--work-dir", str(tmp_path / "further"), "--export-dir", str(tmp_path / "further/export"), *common[:-1], str(tmp_path / "straight/export"), "--camera-lr-scale", "5", "--camera-rays", "--x0-weight-floor", "1", "--stop-at-step", "1"]
    train_multi_view_prior.main(further)
    checkpoint = torch.load(tmp_path / "further/checkpoint.pt", weights_only=True)
    assert checkpoint["architecture"]["camera_rays"] and checkpoint["unet"]["conv_in.weight"].shape[1] == 6
    straight_history = json.loads((tmp_path / "straight/export/provenance.json").read_text())["history"]
    assert checkpoint["history"][: len(straight_history)] == straight_history
    assert checkpoint["history"][len(straight_history)].startswith("(fine-tuned further from the multi-view prior at ")
    groups = checkpoint["optimizer"]["param_groups"]
    assert [g["lr_scale"] for g in groups] == [1.0, 5.0] and groups[1]["lr"] == pytest.approx(5 * groups[0]["lr"])

    guidance = MultiViewPixelGuidance(str(tmp_path / "straight/export"), device="cpu", embedding_cache_dir=None)
    cameras = OrbitDistribution().sample_groups(1, 4, 16, torch.Generator().manual_seed(0))
    rgb = torch.rand(4, 16, 16, 3, requires_grad=True)
    guidance(rgb, Condition(cameras, "a green mug"), 0)["loss_sds"].backward()
    assert torch.isfinite(rgb.grad).all()


def test_view_set_captions_name_each_views_side_only_when_asked():
    sets = ViewGroups(
        images=torch.zeros(1, 4, 8, 8, 3, dtype=torch.uint8),
        colour=torch.tensor([0]),
        object=torch.tensor([OBJECT_NAMES.index("mug")]),
        elevation_deg=torch.full((1, 4), 15.0),
        azimuth_deg=torch.tensor([[0.0, 90.0, 180.0, 270.0]]),
        distance=torch.full((1, 4), 2.8),
        fovy_deg=torch.full((1, 4), 42.0),
    )
    _, cameras, plain = train_multi_view_prior.set_batch(sets, 1, torch.Generator().manual_seed(0), 0.0)
    _, _, worded = train_multi_view_prior.set_batch(sets, 1, torch.Generator().manual_seed(0), 0.0, view_words_share=1.0)
    text = caption(COLOUR_NAMES[0], "mug")
    assert plain == [text] * 4 and cameras.shape == (4, 16)
    assert worded == [f"{text}, front view", f"{text}, side view", f"{text}, back view", f"{text}, side view"]


def test_bad_arguments_exit_with_one_line(capsys, tmp_path):
    for argv, named in ((["--batch-size", "6"], "--batch-size=6 must be a positive multiple of 4"), (["--multi-view-share", "2"], "--multi-view-share=2.0"), (["--view-words-share", "-1"], "--view-words-share=-1.0"), (["--init-from", str(tmp_path)], "no text prior there"), (["--camera-lr-scale", "0"], "--camera-lr-scale=0.0"), (["--camera-x0-weight-floor", "-1"], "--camera-x0-weight-floor=-1.0")):
        with pytest.raises(SystemExit) as exit_info:
            train_multi_view_prior.parse_args(argv)
        assert exit_info.value.code == 2 and named in capsys.readouterr().err


def test_the_set_scorer_judges_front_and_back_views_against_their_cameras(tiny_multi_view_prior):
    cameras = CameraBatch.from_orbit(torch.zeros(4), torch.tensor([10.0, 100.0, -170.0, -60.0]), torch.full((4,), 2.8), torch.full((4,), 42.0), 16)
    assert judged_sides(cameras).tolist() == [VIEWS.index("front"), -1, VIEWS.index("back"), -1]
    result = evaluate_multi_view_prior(load_prior(tiny_multi_view_prior), objects=("mug",), colours=("red",), steps=1)
    summary = result["summary"]
    assert summary["n_sets"] == 1 and result["images"].shape[0] == 4
    assert 0.0 <= summary["set_colour_accuracy"] <= summary["view_colour_accuracy"] <= 1.0


def test_fine_tuning_a_multi_view_prior_keeps_its_camera_embedding_and_inflating_a_text_prior_zeroes_it():
    arch = PriorArchitecture(resolution=16)
    source, target = build_multi_view_unet(arch), build_multi_view_unet(arch)
    torch.nn.init.normal_(source.class_embedding.linear_2.weight)
    inflate_text_prior(target, source)
    assert torch.equal(target.class_embedding.linear_2.weight, source.class_embedding.linear_2.weight)
    inflate_text_prior(target, load_prior(BUNDLED_PRIOR_DIR).unet)
    assert not target.class_embedding.linear_2.weight.any() and not target.class_embedding.linear_2.bias.any()


def test_camera_gradient_reweighting_gives_the_camera_the_gradient_of_the_other_weighting():
    torch.manual_seed(0)
    unet = build_multi_view_unet(PriorArchitecture(resolution=16))
    torch.nn.init.normal_(unet.class_embedding.linear_2.weight, std=0.1)
    set_multi_view_attention(unet, 4)
    camera = list(unet.class_embedding.parameters())
    x, cameras = torch.randn(8, 3, 16, 16), torch.randn(8, 16)
    timesteps = torch.tensor([900] * 4 + [100] * 4)
    text = torch.randn(8, 4, unet.config.cross_attention_dim)
    per_sample = lambda: unet(x, timesteps, encoder_hidden_states=text, class_labels=cameras).sample.square().mean(dim=(1, 2, 3))  # noqa: E731
    min_snr, floored = torch.tensor([0.05] * 4 + [1.0] * 4), torch.tensor([1.0] * 8)
    expected = torch.autograd.grad((floored * per_sample()).mean(), camera)
    reweighting = train_multi_view_prior.CameraGradientReweighting(unet.class_embedding)
    reweighting.scale = floored / min_snr
    reweighted = torch.autograd.grad((min_snr * per_sample()).mean(), camera)
    for want, got in zip(expected, reweighted):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    reweighting.scale = None
    plain = torch.autograd.grad((min_snr * per_sample()).mean(), camera)
    assert not torch.allclose(plain[0], expected[0])


def test_widening_a_prior_to_the_normal_depth_channels_keeps_what_it_predicts():
    """RichDreamer's normal-depth prior starts as the colour prior plus a channel at zero: its first
    three outputs are the colour prior's whatever the depth input, its depth output is 0; a
    prior cannot lose channels."""
    torch.manual_seed(0)
    arch = PriorArchitecture(resolution=16, text_width=32, text_layers=1, block_channels=(8, 16, 16, 16), attention_head_dim=8)
    source, widened = build_multi_view_unet(arch), build_multi_view_unet(arch, channels=4)
    torch.nn.init.normal_(source.conv_out.weight, std=0.1)
    torch.nn.init.normal_(source.class_embedding.linear_2.weight, std=0.1)
    inflate_text_prior(widened, source)
    x, cameras, text = torch.randn(4, 3, 16, 16), torch.randn(4, 16), torch.randn(4, 12, 32)
    with torch.no_grad():
        want = source(x, 500, encoder_hidden_states=text, class_labels=cameras).sample
        got = widened(torch.cat([x, torch.randn(4, 1, 16, 16)], dim=1), 500, encoder_hidden_states=text, class_labels=cameras).sample
    assert got.shape == (4, 4, 16, 16)
    torch.testing.assert_close(got[:, :3], want, rtol=1e-5, atol=1e-6)
    assert not got[:, 3].any()
    with pytest.raises(ValueError, match="can only gain channels"):
        inflate_text_prior(build_multi_view_unet(arch), widened)


def test_a_prior_made_to_read_camera_rays_predicts_what_it_did_until_trained():
    """Ray channels start at zero: a colour prior made to read rays predicts what it did whatever
    the rays; widened on to normal-depth, its ray weights stay on the rays; rays cannot be lost."""
    torch.manual_seed(0)
    arch = PriorArchitecture(resolution=16, text_width=32, text_layers=1, block_channels=(8, 16, 16, 16), attention_head_dim=8)
    source, with_rays = build_multi_view_unet(arch), build_multi_view_unet(arch, camera_rays=True)
    torch.nn.init.normal_(source.class_embedding.linear_2.weight, std=0.1)
    inflate_text_prior(with_rays, source)
    assert reads_camera_rays(with_rays) and not reads_camera_rays(source)
    x, cameras, text = torch.randn(4, 3, 16, 16), torch.randn(4, 16), torch.randn(4, 12, 32)
    with torch.no_grad():
        want = source(x, 500, encoder_hidden_states=text, class_labels=cameras).sample
        got = with_rays(torch.cat([x, torch.randn(4, 3, 16, 16)], dim=1), 500, encoder_hidden_states=text, class_labels=cameras).sample
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.nn.init.normal_(with_rays.conv_in.weight[:, 3:], std=0.1)
    normal_depth = build_multi_view_unet(arch, channels=4, camera_rays=True)
    inflate_text_prior(normal_depth, with_rays)
    assert torch.equal(normal_depth.conv_in.weight[:, 4:], with_rays.conv_in.weight[:, 3:]) and not normal_depth.conv_in.weight[:, 3].any()
    with pytest.raises(ValueError, match="3 image and 3 ray channels, the new UNet 3 and 0; a prior can only gain channels"):
        inflate_text_prior(build_multi_view_unet(arch), with_rays)


def test_view_sets_of_the_normal_depth_and_albedo_domains():
    """The same draws in every domain: 4 channels for normal-depth (its normal map the normal-map
    domain's, its depth 0 off the object), the unlit colour for albedo (brighter than the shaded
    render, the same silhouette)."""
    sets = {domain: render_view_groups(2, 4, 16, seed=3, orbit_sets=True, domain=domain) for domain in ("colour", "normal_map", "normal_depth", "albedo")}
    assert sets["normal_depth"].images.shape == (2, 4, 16, 16, 4) and sets["albedo"].images.shape == (2, 4, 16, 16, 3)
    for domain in ("normal_map", "normal_depth", "albedo"):
        assert torch.equal(sets[domain].colour, sets["colour"].colour) and torch.equal(sets[domain].azimuth_deg, sets["colour"].azimuth_deg)
    normal_depth = sets["normal_depth"].images
    assert torch.equal(normal_depth[..., :3], sets["normal_map"].images)
    background = (sets["colour"].images == 255).all(dim=-1)
    assert (normal_depth[..., 3][background] == 0).all() and (normal_depth[..., 3][~background] > 0).float().mean() > 0.95
    assert torch.equal((sets["albedo"].images == 255).all(dim=-1), background)
    assert sets["albedo"].images[~background].float().mean() > sets["colour"].images[~background].float().mean()
    with pytest.raises(ValueError, match="domain='depth'"):
        render_view_groups(1, 4, 16, seed=0, domain="depth")


@pytest.mark.slow
def test_a_normal_depth_prior_trains_from_the_colour_prior_and_loads_as_a_four_channel_guidance(tmp_path):
    common = ["--steps", "2", "--batch-size", "4", "--sets", "2", "--dataset-size", "4", "--resolution", "16", "--warmup-steps", "1", "--render-workers", "1"]
    train_multi_view_prior.main(["--domain", "normal_depth", "--init-from", str(MULTI_VIEW_PRIOR_DIR), "--work-dir", str(tmp_path), "--export-dir", str(tmp_path / "export"), *common])
    provenance = json.loads((tmp_path / "export/provenance.json").read_text())
    assert provenance["domain"] == "normal_depth" and "fine-tuned further from the multi-view prior" in " ".join(provenance["history"])
    guidance = MultiViewPixelGuidance(str(tmp_path / "export"), text_attention_mask=False, embedding_cache_dir=None, guidance_scale=5.0)
    assert guidance.unet.config.in_channels == guidance.unet.config.out_channels == 4
    cameras = OrbitDistribution().sample_groups(1, 4, 16, torch.Generator().manual_seed(0))
    images = torch.rand(4, 16, 16, 4, requires_grad=True)
    terms = guidance(images, Condition(cameras=cameras, text="a red cube"), step=0)
    terms["loss_sds"].backward()
    assert images.grad[..., 3].abs().sum() > 0
    assert train_multi_view_prior.parse_args(["--domain", "albedo"]).export_dir == DOMAIN_PRIOR_DIRS["albedo"]


def test_true_normal_depth_and_albedo_views_pass_their_judges():
    """The judges of RichDreamer's domains on ground truth: true normal-depth views are the right
    shape and their depth draws the same object (a depth map of another object does not); true
    albedo views are the right colour and shape against the unlit references."""
    prompts = [PriorPrompt(colour, name) for name, colour in (("cube", "red"), ("torus", "purple"), ("cone", "yellow"))]
    view_prompts = [p for p in prompts for _ in range(4)]
    cameras = OrbitDistribution().sample_groups(3, 4, 32, torch.Generator().manual_seed(1))
    normal_depth = torch.cat([render_normal_depth(OBJECTS[p.object], cameras.subset(slice(4 * i, 4 * i + 4)))[0] for i, p in enumerate(prompts)])
    scores = score_normal_depth_views(normal_depth, view_prompts)
    assert scores["shape"].float().mean() >= 0.9 and scores["depth"].all()
    swapped = torch.cat([normal_depth[..., :3], normal_depth.roll(4, dims=0)[..., 3:]], dim=-1)  # each set's depth from another object
    assert not score_normal_depth_views(swapped, view_prompts)["depth"].all()
    albedo = torch.cat([render_object(OBJECTS[p.object], p.colour, cameras.subset(slice(4 * i, 4 * i + 4)), lit=False)[0] for i, p in enumerate(prompts)])
    colour_ok, _ = score_plain(albedo, view_prompts, build_references(["cone", "cube", "torus"], sorted(COLOUR_NAMES), albedo=True))
    assert colour_ok.all()


def test_albedo_shapes_a_mug_shares_with_a_cylinder_count_for_either():
    """Unlit, many of a cylinder's reference views and a mug's whose handle is hidden are the same
    images (the grid's distances absorb their sizes): such a view is right for either prompt, where
    a strict nearest-reference judge failed most true cylinder views (0.86 over the world's
    albedo view sets, 0.95 with ties counted). A view of another object is still wrong."""
    prompts = [PriorPrompt("green", "cylinder"), PriorPrompt("pink", "mug"), PriorPrompt("red", "cube")]
    view_prompts = [p for p in prompts for _ in range(4)]
    cameras = OrbitDistribution().sample_groups(3, 4, 32, torch.Generator().manual_seed(0))
    albedo = torch.cat([render_object(OBJECTS[p.object], p.colour, cameras.subset(slice(4 * i, 4 * i + 4)), lit=False)[0] for i, p in enumerate(prompts)])
    references = build_references(["cube", "cylinder", "mug"], ["green", "pink", "red"], albedo=True)
    _, shape_ok = score_plain(albedo, view_prompts, references)
    assert shape_ok.all()
    cube_called_cylinder = [PriorPrompt(p.colour, "cylinder" if p.object == "cube" else p.object) for p in view_prompts]
    _, judged = score_plain(albedo, cube_called_cylinder, references)
    assert judged[:8].all() and not judged[8:].any()


def test_evaluating_a_normal_depth_prior_reports_shape_and_depth(tiny_normal_depth_prior):
    result = evaluate_multi_view_prior(load_prior(tiny_normal_depth_prior), objects=("cube",), colours=("red",), steps=1, domain="normal_depth")
    summary = result["summary"]
    assert result["images"].shape[-1] == 4 and summary["domain"] == "normal_depth" and summary["n_sets"] == 1
    assert set(summary) == {"domain", "n_sets", "set_shape_accuracy", "view_shape_accuracy", "set_depth_accuracy", "view_depth_accuracy"}
    with pytest.raises(ValueError, match="domain='depth'"):
        evaluate_multi_view_prior(load_prior(tiny_normal_depth_prior), objects=("cube",), colours=("red",), steps=1, domain="depth")
