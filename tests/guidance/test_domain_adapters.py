"""Caption-routed domain adapters: a prior folder's adapters/ runs only for its domain's captions,
and every other caption sees the prior bit for bit as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from bundled.prior.sampling import load_prior, sample_images
from framework.cameras.distribution import OrbitDistribution
from framework.guidance.condition import Condition
from framework.guidance.domain_adapters import DomainAdapters, load_domain_adapters, save_domain_adapter
from framework.guidance.lora import add_lora
from framework.guidance.pixel import PixelDiffusionGuidance

PREFIX = "a normal map of"


@pytest.fixture(scope="module")
def prior_with_adapter(tmp_path_factory: pytest.TempPathFactory, tiny_pixel_prior: Path) -> Path:
    """The tiny prior's folder plus a normal-map adapter whose weights are not zero."""
    from peft import LoraConfig

    folder = tmp_path_factory.mktemp("adapted") / "prior"
    shutil.copytree(tiny_pixel_prior, folder)
    unet = load_prior(folder).unet
    unet.add_adapter(LoraConfig(r=2, lora_alpha=2, init_lora_weights="gaussian", target_modules=["to_q", "to_v", "conv1"]), adapter_name="normal_map")
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    save_domain_adapter(folder, unet, "normal_map", PREFIX)
    return folder


def _guidance(folder: Path) -> PixelDiffusionGuidance:
    return PixelDiffusionGuidance(str(folder), guidance_scale=5.0, embedding_cache_dir=None, device="cpu", seed=0)


def test_only_the_domains_captions_run_its_adapter(prior_with_adapter, tiny_pixel_prior):
    adapted, plain = _guidance(prior_with_adapter), _guidance(tiny_pixel_prior)
    cameras = OrbitDistribution().sample(2, 32, torch.Generator().manual_seed(0))
    noisy, timesteps = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.tensor([300, 700])
    for text, same in (("a red cube", True), ("a normal map of a red cube", False)):
        condition = Condition(text=text, cameras=cameras)
        with_adapters = adapted.noise_predictions(noisy, timesteps, condition)
        without = plain.noise_predictions(noisy, timesteps, condition)
        assert all(torch.equal(a, b) for a, b in zip(with_adapters, without)) == same, text


def test_captions_of_two_domains_in_one_call_are_refused(prior_with_adapter):
    adapters = load_domain_adapters(load_prior(prior_with_adapter).unet, prior_with_adapter)
    assert [a.name for a in adapters.adapters] == ["normal_map"] and adapters.for_captions(["a red cube", ""]) is None
    assert adapters.for_captions(["a normal map of a cube", "a normal map of a cube, back view"]).caption_prefix == PREFIX
    with pytest.raises(ValueError, match="different domains"):
        adapters.for_captions(["a red cube", "a normal map of a cube"])
    assert load_domain_adapters(torch.nn.Linear(1, 1), prior_with_adapter / "unet") == DomainAdapters()  # no adapters/ there


def test_sampling_routes_each_prompt_to_its_domain(prior_with_adapter, tiny_pixel_prior):
    prompts = ["a normal map of a cube", "a red cube", "a blue sphere", "a normal map of a red cone"]
    adapted, plain = load_prior(prior_with_adapter), load_prior(tiny_pixel_prior)
    # One prompt a batch (a batch's composition moves float results in the last bits), then
    # batches of up to 3 that the domains split: the same images to float precision.
    mixed = sample_images(adapted, prompts, torch.Generator().manual_seed(0), steps=2, batch_size=1)
    base = sample_images(plain, prompts, torch.Generator().manual_seed(0), steps=2, batch_size=1)
    assert torch.equal(mixed[1:3], base[1:3]) and not torch.equal(mixed[0], base[0]) and not torch.equal(mixed[3], base[3])
    torch.testing.assert_close(sample_images(adapted, prompts, torch.Generator().manual_seed(0), steps=2, batch_size=3), mixed, rtol=0, atol=1e-5)


def test_a_vsd_lora_and_a_domain_adapter_are_refused_together(prior_with_adapter):
    guidance = _guidance(prior_with_adapter)
    add_lora(guidance.unet, rank=2)
    cameras = OrbitDistribution().sample(1, 32, torch.Generator().manual_seed(0))
    noisy = torch.randn(1, 3, 32, 32)
    guidance.noise_predictions(noisy, torch.tensor([500]), Condition(text="a red cube", cameras=cameras))
    with pytest.raises(ValueError, match="VSD.*'normal_map'"):
        guidance.noise_predictions(noisy, torch.tensor([500]), Condition(text="a normal map of a red cube", cameras=cameras))
