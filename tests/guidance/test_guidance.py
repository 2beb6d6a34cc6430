import warnings

import pytest
import torch

from framework.guidance.denoising import denoise
from framework.cameras.distribution import OrbitDistribution
from framework.guidance.condition import Condition
from framework.guidance.cuda_graph import GraphedCall
from framework.guidance.embedding_cache import EmbeddingCache
from framework.guidance.estimators.sds import SCORE_DISTILLATION
from framework.guidance.latent import LatentDiffusionGuidance
from framework.guidance.pixel import PixelDiffusionGuidance
from framework.guidance.vocabulary import unknown_words
from framework.schedules import Schedule


def _cameras(n: int = 2, size: int = 32):
    return OrbitDistribution().sample(n, size, torch.Generator().manual_seed(0))


def _condition(n: int = 2, size: int = 32, text: str = "a red cube") -> Condition:
    return Condition(_cameras(n, size), text=text)


@pytest.mark.parametrize("variant", ["pixel", "latent"])
def test_sds_gradient_is_the_weighted_noise_residual(variant, tiny_pixel_prior, tiny_latent_prior, tmp_path):
    if variant == "pixel":
        guidance = PixelDiffusionGuidance(str(tiny_pixel_prior), guidance_scale=7.5, embedding_cache_dir=str(tmp_path), device="cpu")
    else:
        guidance = LatentDiffusionGuidance(str(tiny_latent_prior), resolution=32, guidance_scale=7.5, embedding_cache_dir=str(tmp_path), device="cpu")
    rgb = torch.rand(2, 32, 32, 3, requires_grad=True)
    out = guidance(rgb, _condition(), step=0)
    out["loss_sds"].backward()
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0
    assert torch.isfinite(out["sds_grad_norm"]) and 20 <= out["timestep"] <= 980
    assert not any(p.requires_grad for p in guidance.unet.parameters())


def test_pixel_sds_gradient_matches_the_formula(tiny_pixel_prior):
    guidance = PixelDiffusionGuidance(str(tiny_pixel_prior), guidance_scale=5.0, embedding_cache_dir=None, device="cpu", seed=3)
    condition = _condition(1, text="a blue torus")
    rgb = torch.rand(1, 32, 32, 3, requires_grad=True)
    state = guidance.generator.get_state()
    guidance(rgb, condition, 0)["loss_sds"].backward()

    guidance.generator.set_state(state)  # replay the draws of the call: timesteps, then noise
    t = guidance.sample_timesteps(1, 0)
    x0 = rgb.detach().permute(0, 3, 1, 2) * 2 - 1
    noise = torch.randn(x0.shape, generator=guidance.generator)
    a = guidance.alphas_cumprod[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
    with torch.no_grad():
        eps = guidance.guided_noise(noisy, t, condition)
    expected = (1 - a) * (eps - noise) * 2  # d(x0)/d(rgb) = 2
    torch.testing.assert_close(rgb.grad.permute(0, 3, 1, 2), expected, atol=1e-4, rtol=1e-4)
    # The SDS estimator's direction is the same residual, before w(t) and the chain rule.
    direction = SCORE_DISTILLATION.direction(guidance, x0, t, noise, condition)
    torch.testing.assert_close((1 - a) * direction, expected / 2, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", ["pixel", "latent"])
def test_call_is_estimate_on_the_encoded_images(variant, tiny_pixel_prior, tiny_latent_prior):
    """`guidance(rgb, ...)` encodes the images, then runs the SDS step `estimate` on the
    model-space samples; a sample made another way (Fantasia3D's latent) goes to `estimate`."""
    if variant == "pixel":
        guidance = PixelDiffusionGuidance(str(tiny_pixel_prior), guidance_scale=5.0, embedding_cache_dir=None, device="cpu", seed=2)
    else:
        guidance = LatentDiffusionGuidance(str(tiny_latent_prior), resolution=32, guidance_scale=5.0, embedding_cache_dir=None, device="cpu", seed=2)
    condition = _condition(2)
    rgb = torch.rand(2, 32, 32, 3)
    state = guidance.generator.get_state()
    called = guidance(rgb, condition, 0)
    guidance.generator.set_state(state)
    x0 = guidance.encode_images(rgb.permute(0, 3, 1, 2)).detach().requires_grad_(True)
    estimated = guidance.estimate(x0, condition, 0)
    assert set(estimated) == {"loss_sds", "sds_grad_norm", "timestep"}
    for key in estimated:
        torch.testing.assert_close(called[key], estimated[key], msg=key)
    estimated["loss_sds"].backward()
    # The loss's gradient w.r.t. the samples is the SDS gradient (whose norm is logged), averaged
    # over the batch.
    torch.testing.assert_close(x0.grad.norm() * x0.shape[0], estimated["sds_grad_norm"])


def test_timestep_schedule_and_clipping(tiny_pixel_prior):
    guidance = PixelDiffusionGuidance(str(tiny_pixel_prior), t_min=0.2, t_max=Schedule([[0, 0.9], [10, 0.3]]), grad_clip=0.01, embedding_cache_dir=None, device="cpu")
    late = guidance.sample_timesteps(256, 10)
    assert late.min() >= 200 and late.max() < 300
    rgb = torch.rand(1, 32, 32, 3, requires_grad=True)
    guidance(rgb, _condition(1), 0)["loss_sds"].backward()
    assert rgb.grad.abs().max() <= 0.01 * 2 + 1e-6


def test_view_dependent_embeddings_differ_by_view(tiny_pixel_prior):
    guidance = PixelDiffusionGuidance(str(tiny_pixel_prior), embedding_cache_dir=None, device="cpu")
    cameras = OrbitDistribution().sample(1, 32, torch.Generator().manual_seed(0))
    front_camera = type(cameras).from_orbit(torch.tensor([10.0]), torch.tensor([0.0]), torch.tensor([2.8]), torch.tensor([42.0]), 32)
    back_camera = type(cameras).from_orbit(torch.tensor([10.0]), torch.tensor([180.0]), torch.tensor([2.8]), torch.tensor([42.0]), 32)
    front, front_negative = guidance.conditioning(Condition(front_camera, text="a red mug"))
    back, back_negative = guidance.conditioning(Condition(back_camera, text="a red mug"))
    assert not torch.allclose(front, back)
    torch.testing.assert_close(front_negative, back_negative)  # the negative prompt has no view
    embeddings = guidance.prompt_embeddings("a red mug")
    torch.testing.assert_close(front[0], embeddings["front"])
    torch.testing.assert_close(back[0], embeddings["back"])


def test_prompts_are_encoded_lazily_once_each(tiny_pixel_prior, monkeypatch):
    """No prompt is set up front: each condition's text is encoded when first seen, then reused;
    two prompts live side by side."""
    guidance = PixelDiffusionGuidance(str(tiny_pixel_prior), view_dependent=False, embedding_cache_dir=None, device="cpu")
    encoded = []
    encode_text = guidance.encode_text
    monkeypatch.setattr(guidance, "encode_text", lambda prompts: encoded.append(list(prompts)) or encode_text(prompts))
    cameras = _cameras(2)
    cube, _ = guidance.conditioning(Condition(cameras, text="a red cube"))
    guidance.conditioning(Condition(cameras, text="a red cube"))
    torus, _ = guidance.conditioning(Condition(cameras, text="a blue torus"))
    assert [batch[0] for batch in encoded] == ["a red cube", "a blue torus"]
    assert cube.shape[0] == 2 and not torch.allclose(cube, torus)
    torch.testing.assert_close(cube[1], encode_text(["a red cube"])[0])


def test_embedding_cache_round_trips_and_is_keyed_by_model(tmp_path):
    calls = []

    def encode(prompts):
        calls.append(list(prompts))
        return torch.stack([torch.full((2, 3), float(len(p))) for p in prompts])

    first = EmbeddingCache("model-a", tmp_path).get(["a", "bb"], encode)
    again = EmbeddingCache("model-a", tmp_path).get(["bb", "a"], encode)
    assert calls == [["a", "bb"]]
    torch.testing.assert_close(again, first.flip(0))
    EmbeddingCache("model-b", tmp_path).get(["a"], encode)
    assert calls[-1] == ["a"]


def test_bad_inputs_are_named(tiny_pixel_prior, tiny_latent_prior, tmp_path):
    with pytest.raises(TypeError, match="pretrained"):
        PixelDiffusionGuidance(device="cpu")  # no implicit default model: configs name the folder
    with pytest.raises(FileNotFoundError, match="incomplete.*'tokenizer'"):
        (tmp_path / "incomplete").mkdir()
        PixelDiffusionGuidance(str(tmp_path / "incomplete"), device="cpu")
    with pytest.raises(ValueError, match="multiple of 8"):
        LatentDiffusionGuidance(str(tiny_latent_prior), resolution=100, device="cpu")
    guidance = PixelDiffusionGuidance(str(tiny_pixel_prior), embedding_cache_dir=None, device="cpu")
    for text in ("  ", "", None):
        with pytest.raises(ValueError, match="prompt="):
            guidance(torch.rand(1, 32, 32, 3), _condition(1, text=text), 0)
    with pytest.raises(ValueError, match="weighting"):
        PixelDiffusionGuidance(str(tiny_pixel_prior), weighting="nope", device="cpu")


def test_text_attention_mask_matches_how_the_prior_was_trained(tiny_pixel_prior):
    masked = PixelDiffusionGuidance(str(tiny_pixel_prior), embedding_cache_dir=None, device="cpu")
    unmasked = PixelDiffusionGuidance(str(tiny_pixel_prior), text_attention_mask=False, embedding_cache_dir=None, device="cpu")
    ids = unmasked.tokenizer(["a red cube"], padding="max_length", max_length=unmasked.max_tokens, return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(unmasked.encode_text(["a red cube"]), unmasked.text_encoder(ids).last_hidden_state)
    assert not torch.allclose(masked.encode_text(["a red cube"]), unmasked.encode_text(["a red cube"]))
    assert masked.model_key != unmasked.model_key  # the embedding cache keeps the two apart


@pytest.mark.parametrize("variant", ["pixel", "latent"])
def test_denoise_returns_an_image_of_the_render_size(variant, tiny_pixel_prior, tiny_latent_prior):
    if variant == "pixel":
        guidance = PixelDiffusionGuidance(str(tiny_pixel_prior), guidance_scale=5.0, embedding_cache_dir=None, device="cpu")
    else:
        guidance = LatentDiffusionGuidance(str(tiny_latent_prior), resolution=32, guidance_scale=5.0, embedding_cache_dir=None, device="cpu")
    condition = _condition(2, 24)
    rgb = torch.rand(2, 24, 24, 3, requires_grad=True)
    refined = denoise(guidance, rgb, condition, strength=0.5, n_steps=3)
    assert refined.shape == rgb.shape and not refined.requires_grad
    assert torch.isfinite(refined).all() and refined.min() >= 0.0 and refined.max() <= 1.0
    with pytest.raises(ValueError, match="strength=0.0"):
        denoise(guidance, rgb, condition, strength=0.0, n_steps=3)


def test_denoise_at_low_strength_keeps_the_image(tiny_pixel_prior):
    """At t close to 0 the noise is tiny and DDIM returns (almost) the input: a random-weight
    model cannot move it far; at full strength the output no longer follows the input."""
    guidance = PixelDiffusionGuidance(str(tiny_pixel_prior), guidance_scale=1.0, embedding_cache_dir=None, device="cpu", seed=1)
    condition = _condition(1, 32)
    rgb = torch.zeros(1, 32, 32, 3)
    rgb[:, 8:24, 8:24, 0] = 1.0
    gentle = denoise(guidance, rgb, condition, strength=0.01, n_steps=1)
    strong = denoise(guidance, rgb, condition, strength=1.0, n_steps=4)
    assert (gentle - rgb).abs().mean() < 0.05
    assert (strong - rgb).abs().mean() > 3 * (gentle - rgb).abs().mean()


def test_denoise_guidance_scale_overrides_the_sds_scale_for_denoising_only(tiny_pixel_prior):
    def refined(configured: float, override: float | None) -> torch.Tensor:
        guidance = PixelDiffusionGuidance(str(tiny_pixel_prior), guidance_scale=configured, embedding_cache_dir=None, device="cpu", seed=3)
        return denoise(guidance, torch.full((1, 32, 32, 3), 0.5), _condition(1, 32), strength=0.8, n_steps=3, guidance_scale=override)

    assert torch.equal(refined(20.0, 1.5), refined(1.5, None))
    assert not torch.equal(refined(20.0, 1.5), refined(20.0, None))


def test_graphed_call_runs_eagerly_on_cpu_and_with_gradients():
    calls = []

    def double(x):
        calls.append(x.shape)
        return 2 * x

    graphed = GraphedCall(double)
    x = torch.ones(3, requires_grad=True)
    assert torch.equal(graphed(x), 2 * x)  # gradients on: eager
    with torch.no_grad():
        assert torch.equal(graphed(torch.ones(2)), torch.full((2,), 2.0))  # CPU: eager
    assert graphed.n_graphs == 0 and len(calls) == 2


def test_graphed_call_falls_back_to_eager_when_capture_fails(monkeypatch):
    graphed = GraphedCall(lambda x: x + 1)
    monkeypatch.setattr(GraphedCall, "_on_cuda", staticmethod(lambda inputs: True))

    def refuse(inputs):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(graphed, "_capture", refuse)
    with torch.no_grad(), pytest.warns(UserWarning, match="capture of .* failed, running it eagerly"):
        assert torch.equal(graphed(torch.zeros(2)), torch.ones(2))
    with torch.no_grad():
        assert torch.equal(graphed(torch.ones(2)), torch.full((2,), 2.0))  # no second capture attempt
    assert graphed.n_graphs == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need CUDA")
def test_graphed_guidance_matches_eager_on_cuda(tiny_pixel_prior):
    kwargs = dict(guidance_scale=5.0, embedding_cache_dir=None, device="cuda")
    graphed = PixelDiffusionGuidance(str(tiny_pixel_prior), cuda_graphs=True, **kwargs)
    eager = PixelDiffusionGuidance(str(tiny_pixel_prior), cuda_graphs=False, **kwargs)
    eager.unet.load_state_dict(graphed.unet.state_dict())
    condition = _condition(2, text="a blue torus")
    outputs = {"graphed": [], "eager": []}
    with torch.no_grad():
        for seed in (0, 1, 2):  # new inputs each call: the graph must read them, not its first ones
            noisy = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed)).cuda()
            t = torch.tensor([100 + 300 * seed, 900 - 200 * seed])
            outputs["graphed"].append(graphed.guided_noise(noisy, t, condition))
            outputs["eager"].append(eager.guided_noise(noisy, t, condition))
    assert graphed._model_call.n_graphs == 1
    for got, expected in zip(outputs["graphed"], outputs["eager"]):
        torch.testing.assert_close(got, expected, atol=2e-3, rtol=2e-3)
    assert not torch.allclose(outputs["graphed"][0], outputs["graphed"][1])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_device_without_cuda_is_a_clear_error(tiny_pixel_prior):
    with pytest.raises(RuntimeError, match=r"device='cuda' but CUDA is not available"):
        PixelDiffusionGuidance(str(tiny_pixel_prior), device="cuda", embedding_cache_dir=None)


def test_words_the_prior_cannot_read_are_named_once(tiny_pixel_prior):
    """The bundled prior's vocabulary is word-level: a word it lacks becomes its unknown token.
    The guidance says so, once per prompt, naming the words; known prompts pass silently."""
    guidance = PixelDiffusionGuidance(str(tiny_pixel_prior), embedding_cache_dir=None, device="cpu", negative_prompt="blurry")
    assert unknown_words(guidance.tokenizer, "a red cube, front view") == []
    assert unknown_words(guidance.tokenizer, "a DSLR photo of a red corgi, a corgi") == ["DSLR", "photo", "corgi"]
    with pytest.warns(UserWarning) as caught:
        guidance.prompt_embeddings("a zebra cube")
    messages = [str(w.message) for w in caught]
    assert any("prompt 'a zebra cube'" in m and "'zebra'" in m for m in messages)
    assert any("negative_prompt 'blurry'" in m and "'blurry'" in m for m in messages)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        guidance.prompt_embeddings("a zebra cube")  # encoded already: no second warning
        PixelDiffusionGuidance(str(tiny_pixel_prior), embedding_cache_dir=None, device="cpu").prompt_embeddings("a red mug")


def test_subword_vocabularies_have_no_unknown_words():
    class Subword:
        unk_token_id = None

    assert unknown_words(Subword(), "a DSLR photo of a corgi") == []
