"""Novel-view guidance (Zero-1-to-3 family): the relative pose, both projection layouts, and SDS
conditioned on a reference view, for the pixel (bundled) and latent (Zero-1-to-3) layouts."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

from framework.cameras.batch import ReferenceView
from framework.cameras.camera import CameraBatch
from framework.cameras.distribution import OrbitDistribution
from framework.guidance.camera_projection import camera_projection, load_camera_projection, relative_pose, save_camera_projection
from framework.guidance.condition import Condition
from framework.guidance.novel_view import NovelViewGuidance


def _orbit(elevation: list[float], azimuth: list[float], distance: list[float] | None = None, size: int = 32) -> CameraBatch:
    n = len(elevation)
    return CameraBatch.from_orbit(torch.tensor(elevation), torch.tensor(azimuth), torch.tensor(distance or [2.8] * n), torch.full((n,), 42.0), size)


def _reference(size: int = 32, seed: int = 0) -> ReferenceView:
    image = torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(seed))
    return ReferenceView(image, torch.ones(1, size, size, 1), _orbit([15.0], [0.0], size=size))


def test_relative_pose_follows_zero123s_polar_convention():
    reference = _orbit([15.0], [0.0])
    cameras = _orbit([15.0, 45.0, 15.0], [0.0, 0.0, 90.0], [2.8, 2.8, 3.0])
    pose = relative_pose(cameras, reference)
    torch.testing.assert_close(pose[0], torch.tensor([0.0, 0.0, 1.0, 0.0]))
    # Looking from higher up is a smaller polar angle: the first entry is negative.
    torch.testing.assert_close(pose[1], torch.tensor([-math.radians(30.0), 0.0, 1.0, 0.0]))
    torch.testing.assert_close(pose[2], torch.tensor([0.0, 1.0, 0.0, 0.2]), atol=1e-6, rtol=0)
    stable = relative_pose(cameras, reference, "stable_zero123")
    torch.testing.assert_close(stable[:, :3], pose[:, :3])
    torch.testing.assert_close(stable[:, 3], torch.full((3,), math.radians(75.0)))
    with pytest.raises(ValueError, match="pose convention='zero1to3'"):
        relative_pose(cameras, reference, "zero1to3")
    with pytest.raises(ValueError, match="2 input-view cameras for 3 target cameras"):
        relative_pose(cameras, _orbit([0.0, 0.0], [0.0, 0.0]))


def test_both_public_projection_layouts_load_to_the_same_linear(tmp_path, tiny_zero123_prior):
    projection = camera_projection(24)
    torch.nn.init.normal_(projection.weight)
    save_camera_projection(projection, tmp_path / "community")
    keys = load_file(tmp_path / "community/cc_projection/diffusion_pytorch_model.safetensors")
    assert sorted(keys) == ["projection.bias", "projection.weight"]
    loaded = load_camera_projection(tmp_path / "community")
    torch.testing.assert_close(loaded.weight, projection.weight.half().float())
    stable = load_camera_projection(tiny_zero123_prior)  # clip_camera_projection/, proj.*
    assert (stable.in_features, stable.out_features) == (28, 24)
    with pytest.raises(FileNotFoundError, match="has no camera projection"):
        load_camera_projection(tmp_path)


def test_a_fresh_projection_passes_the_image_embedding_and_ignores_the_pose():
    projection = camera_projection(8)
    embedding, pose = torch.randn(3, 8), torch.randn(3, 4)
    torch.testing.assert_close(projection(torch.cat([embedding, pose], dim=-1)), embedding)


@pytest.mark.parametrize("variant", ["bundled", "zero123"])
def test_sds_reaches_the_render_and_depends_on_the_reference_and_the_pose(variant, tiny_novel_view_prior, tiny_zero123_prior):
    if variant == "bundled":
        guidance = NovelViewGuidance(str(tiny_novel_view_prior), guidance_scale=3.0, device="cpu", embedding_cache_dir=None)
    else:
        guidance = NovelViewGuidance(str(tiny_zero123_prior), pose_convention="stable_zero123", resolution=32, guidance_scale=3.0, device="cpu", embedding_cache_dir=None)
    cameras = OrbitDistribution().sample(2, 32, torch.Generator().manual_seed(0))
    rgb = torch.rand(2, 32, 32, 3, requires_grad=True)
    out = guidance(rgb, Condition(cameras, None, _reference()), 0)
    out["loss_sds"].backward()
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in guidance.unet.parameters())

    noisy, t = torch.randn(2, 4 if variant == "zero123" else 3, *((4, 4) if variant == "zero123" else (32, 32))), torch.tensor([500, 500])
    with torch.no_grad():
        base = guidance.guided_noise(noisy, t, Condition(cameras, None, _reference()))
        other_image = guidance.guided_noise(noisy, t, Condition(cameras, None, _reference(seed=1)))
        other_pose = guidance.guided_noise(noisy, t, Condition(OrbitDistribution().sample(2, 32, torch.Generator().manual_seed(5)), None, _reference()))
    assert not torch.allclose(base, other_image) and not torch.allclose(base, other_pose)


def test_the_unconditional_half_zeroes_the_image_and_the_pose(tiny_novel_view_prior):
    guidance = NovelViewGuidance(str(tiny_novel_view_prior), device="cpu", embedding_cache_dir=None)
    cameras = OrbitDistribution().sample(3, 32, torch.Generator().manual_seed(0))
    (tokens, concat), (null_tokens, null_concat) = guidance.conditioning(Condition(cameras, None, _reference()))
    assert tokens.shape == (3, 1, 16) and concat.shape == (3, 3, 32, 32)
    assert not null_tokens.any() and not null_concat.any()
    # The reference is encoded once, not every step.
    calls = []
    guidance.image_encoder.register_forward_hook(lambda *args: calls.append(1))
    reference = _reference(seed=2)
    for _ in range(3):
        guidance.conditioning(Condition(cameras, None, reference))
    assert len(calls) == 1


def test_missing_reference_and_incomplete_folders_are_named(tiny_novel_view_prior, tmp_path):
    guidance = NovelViewGuidance(str(tiny_novel_view_prior), device="cpu", embedding_cache_dir=None)
    with pytest.raises(ValueError, match="conditioned on an image: pass image=<file>"):
        guidance.conditioning(Condition(OrbitDistribution().sample(1, 32, torch.Generator()), "a red cube"))
    broken = tmp_path / "broken"
    shutil.copytree(tiny_novel_view_prior, broken)
    shutil.rmtree(broken / "cc_projection")
    with pytest.raises(FileNotFoundError, match="has no camera projection"):
        NovelViewGuidance(str(broken), device="cpu")
    with pytest.raises(ValueError, match="pose_convention='polar'"):
        NovelViewGuidance(str(tiny_novel_view_prior), pose_convention="polar", device="cpu")
