"""The five score-distillation estimators: each direction against its formula, on real guidance
classes with tiny random priors; VSD's LoRA and camera embedding."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from framework.cameras.distribution import OrbitDistribution
from framework.guidance.condition import Condition
from framework.guidance.estimators import ESTIMATORS, build_estimator
from framework.guidance.estimators.csd import ClassifierScoreDistillation
from framework.guidance.estimators.ism import IntervalScoreMatching
from framework.guidance.estimators.nfsd import NoiseFreeScoreDistillation
from framework.guidance.estimators.sds import SCORE_DISTILLATION
from framework.guidance.latent import LatentDiffusionGuidance
from framework.guidance.pixel import PixelDiffusionGuidance
from framework.guidance.slot import GuidanceSlot


def _condition(n: int = 2, text: str = "a red cube", seed: int = 0) -> Condition:
    return Condition(OrbitDistribution().sample(n, 32, torch.Generator().manual_seed(seed)), text=text)


def _pixel(prior, **kwargs) -> PixelDiffusionGuidance:
    return PixelDiffusionGuidance(str(prior), guidance_scale=7.5, embedding_cache_dir=None, device="cpu", seed=1, **kwargs)


def _draws(guidance, x0, step: int = 0):
    """The timesteps and noise `estimate` draws next (the generator is left where it was)."""
    state = guidance.generator.get_state()
    t = guidance.sample_timesteps(x0.shape[0], step)
    noise = torch.randn(x0.shape, generator=guidance.generator)
    guidance.generator.set_state(state)
    return t, noise


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@pytest.mark.parametrize("variant", ["pixel", "latent"])
def test_every_estimator_steps_the_renders(name, variant, tiny_pixel_prior, tiny_latent_prior):
    if variant == "pixel":
        guidance = _pixel(tiny_pixel_prior)
    else:
        guidance = LatentDiffusionGuidance(str(tiny_latent_prior), resolution=32, guidance_scale=7.5, embedding_cache_dir=None, device="cpu")
    slot = GuidanceSlot("main", guidance, estimator=name)
    rgb = torch.rand(2, 32, 32, 3, requires_grad=True)
    out = slot(rgb, _condition(), 0)
    assert {f"loss_{name}", f"{name}_grad_norm", "timestep"} <= set(out)
    out[f"loss_{name}"].backward()
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0
    if name == "vsd":
        out["loss_lora"].backward()
        lora = slot.trainable_modules()["lora"]
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in lora.parameters())
    assert not any(p.requires_grad for n, p in guidance.unet.named_parameters() if "lora_" not in n)


def test_csd_is_sds_without_its_noise_residual(tiny_pixel_prior):
    guidance = _pixel(tiny_pixel_prior)
    condition, x0 = _condition(), torch.rand(2, 3, 32, 32) * 2 - 1
    t, noise = _draws(guidance, x0)
    with torch.no_grad():
        conditional, unconditional = guidance.noise_predictions(guidance.noisy_samples(x0, t, noise), t, condition)
        csd = ClassifierScoreDistillation().direction(guidance, x0, t, noise, condition)
        sds = SCORE_DISTILLATION.direction(guidance, x0, t, noise, condition)
    torch.testing.assert_close(csd, 7.5 * (conditional - unconditional))
    torch.testing.assert_close(sds - csd, unconditional - noise, atol=1e-5, rtol=1e-5)


def test_nfsd_uses_the_negative_prompt_only_above_small_timesteps(tiny_pixel_prior):
    guidance = _pixel(tiny_pixel_prior)
    condition, x0 = _condition(), torch.rand(2, 3, 32, 32) * 2 - 1
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(4))
    t = torch.tensor([100, 700])  # one below 200 of 1000, one above
    estimator = NoiseFreeScoreDistillation(negative_prompt="a blue cube")
    with torch.no_grad():
        noisy = guidance.noisy_samples(x0, t, noise)
        conditional, unconditional = guidance.noise_predictions(noisy, t, condition)
        (negative,) = guidance.noise_predictions(noisy, t, replace(condition, text="a blue cube"), halves=("conditional",))
        got = estimator.direction(guidance, x0, t, noise, condition)
        without = NoiseFreeScoreDistillation(negative_prompt=None).direction(guidance, x0, t, noise, condition)
    classifier = 7.5 * (conditional - unconditional)
    torch.testing.assert_close(got[0], unconditional[0] + classifier[0])
    torch.testing.assert_close(got[1], unconditional[1] - negative[1] + classifier[1])
    torch.testing.assert_close(without, unconditional + classifier)
    assert not torch.allclose(got[1], without[1])


def test_ism_inverts_with_ddim_and_matches_a_step_by_step_reference(tiny_pixel_prior):
    guidance = _pixel(tiny_pixel_prior)
    condition, x0 = _condition(1), torch.rand(1, 3, 32, 32) * 2 - 1
    t = torch.tensor([530])
    a = guidance.alphas_cumprod

    def unconditional(sample, step):
        (eps,) = guidance.noise_predictions(sample, torch.tensor([step]), condition, halves=("unconditional",))
        return eps

    def ddim(sample, now, then, eps):
        x0_hat = (sample - (1 - a[now]).sqrt() * eps) / a[now].sqrt()
        return a[then].sqrt() * x0_hat + (1 - a[then]).sqrt() * eps

    with torch.no_grad():
        sample = x0
        for now, then in ((0, 200), (200, 400), (400, 480)):  # s = 530 - 50, strides of 200
            sample = ddim(sample, now, then, unconditional(sample, now))
        eps_s = unconditional(sample, 480)
        x_t = ddim(sample, 480, 530, eps_s)
        expected = guidance.guided_noise(x_t, t, condition) - eps_s
        estimator = IntervalScoreMatching(interval=0.05, inversion_stride=0.2)
        got = estimator.direction(guidance, x0, t, torch.randn(x0.shape), condition)
        again = estimator.direction(guidance, x0, t, torch.randn(x0.shape), condition)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(again, got)  # no random noise: the path is deterministic


def test_vsd_starts_as_guided_minus_conditional_and_its_lora_learns(tiny_pixel_prior):
    guidance = _pixel(tiny_pixel_prior)
    condition, x0 = _condition(), torch.rand(2, 3, 32, 32) * 2 - 1
    torch.manual_seed(123)
    global_state = torch.get_rng_state()
    estimator = build_estimator("vsd")
    estimator.bind(guidance)
    assert torch.equal(torch.get_rng_state(), global_state)  # the adapter's init leaves the global RNG alone
    t, noise = _draws(guidance, x0)
    with torch.no_grad():
        pristine = guidance.guided_noise(guidance.noisy_samples(x0, t, noise), t, condition)
        conditional, _ = guidance.noise_predictions(guidance.noisy_samples(x0, t, noise), t, condition)
        first = estimator.direction(guidance, x0, t, noise, condition)
    torch.testing.assert_close(first, pristine - conditional)  # B = 0 and a zero camera embedding

    parts = estimator.trainable_modules()
    assert set(parts) == {"lora", "camera_embedding"}
    keys = list(parts["lora"].state_dict())
    assert keys and all("lora_A.default" in key or "lora_B.default" in key for key in keys)
    optimizer = torch.optim.Adam([p for module in parts.values() for p in module.parameters()], lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        estimator.terms(guidance, x0, condition)["loss_lora"].backward()
        optimizer.step()
    with torch.no_grad():
        trained = estimator.direction(guidance, x0, t, noise, condition)
        turned = estimator.direction(guidance, x0, t, noise, replace(condition, cameras=_condition(seed=9).cameras))
        # The prior itself is untouched: the adapter is off outside VSD's own calls.
        torch.testing.assert_close(guidance.guided_noise(guidance.noisy_samples(x0, t, noise), t, condition), pristine)
    assert not torch.allclose(trained, first) and not torch.allclose(trained, turned)


def test_a_named_estimator_is_built_once_per_slot_across_stage_variants(tiny_pixel_prior):
    slot = GuidanceSlot("main", _pixel(tiny_pixel_prior), estimator="vsd")
    variant = replace(slot, weight=0.5)
    assert variant.estimator is slot.estimator
    assert replace(slot, estimator={"name": "ism", "interval": 0.1}).estimator.interval == 0.1
    assert set(slot.trainable_modules()) == {"lora", "camera_embedding"}


@pytest.mark.parametrize(("spec", "message"), [("sdss", "estimator='sdss'"), ({"name": "ism", "intervall": 0.1}, "intervall"), ({"name": "ism", "interval": 2.0}, "interval=2.0")])
def test_a_bad_estimator_is_one_line_naming_it(spec, message):
    with pytest.raises(ValueError, match=message):
        build_estimator(spec)


@pytest.mark.parametrize("name", ["vsd", "ism", "nfsd"])
@pytest.mark.parametrize("family", ["novel_view", "multi_view"])
def test_estimators_run_on_camera_conditioned_priors(name, family, tiny_novel_view_prior, tiny_multi_view_prior):
    """Zero-1-to-3's image + pose and MVDream's view groups: VSD's LoRA and camera embedding sit
    beside their own conditioning; NFSD on a prior that reads no text uses eps_0 as delta_D."""
    from framework.cameras.batch import ReferenceView
    from framework.guidance.multi_view import MultiViewPixelGuidance
    from framework.guidance.novel_view import NovelViewGuidance

    if family == "novel_view":
        guidance = NovelViewGuidance(str(tiny_novel_view_prior), guidance_scale=3.0, device="cpu", embedding_cache_dir=None)
        reference = ReferenceView(torch.rand(1, 32, 32, 3), torch.ones(1, 32, 32, 1), OrbitDistribution().sample(1, 32, torch.Generator().manual_seed(3)))
        condition = Condition(OrbitDistribution().sample(2, 32, torch.Generator().manual_seed(0)), None, reference)
    else:
        guidance = MultiViewPixelGuidance(str(tiny_multi_view_prior), num_views=2, guidance_scale=5.0, device="cpu", embedding_cache_dir=None)
        condition = Condition(OrbitDistribution().sample_groups(1, 2, 32, torch.Generator().manual_seed(0)), "a red cube")
    slot = GuidanceSlot("main", guidance, estimator=name)
    rgb = torch.rand(2, 32, 32, 3, requires_grad=True)
    out = slot(rgb, condition, 0)
    sum(value for key, value in out.items() if key.startswith("loss_")).backward()
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0
    if name == "vsd":
        camera = slot.trainable_modules()["camera_embedding"]
        assert all(p.grad is not None for p in camera.parameters())
