"""Point-E base denoiser port: the original checkpoint layout (key names written out by hand from
point_e/models/transformer.py), parity with an independent functional reference, loading errors,
and the diffusion schedule."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from framework.guidance.point_e import TIMESTEPS, PointEConfig, PointETransformer, load_point_e, point_e_scheduler, timestep_embedding

TINY = PointEConfig(width=32, layers=2, heads=2, n_ctx=64, clip_dim=16)


def _original_shapes() -> dict[str, tuple[int, ...]]:
    """The tiny config's state dict as Point-E's `CLIPImagePointDiffusionTransformer` names it, in its order."""
    w, clip, inp, out = 32, 16, 6, 12
    shapes: dict[str, tuple[int, ...]] = {
        "time_embed.c_fc.weight": (4 * w, w),
        "time_embed.c_fc.bias": (4 * w,),
        "time_embed.c_proj.weight": (w, 4 * w),
        "time_embed.c_proj.bias": (w,),
        "ln_pre.weight": (w,),
        "ln_pre.bias": (w,),
    }
    for i in range(2):
        block = f"backbone.resblocks.{i}."
        shapes.update(
            {
                block + "attn.c_qkv.weight": (3 * w, w),
                block + "attn.c_qkv.bias": (3 * w,),
                block + "attn.c_proj.weight": (w, w),
                block + "attn.c_proj.bias": (w,),
                block + "ln_1.weight": (w,),
                block + "ln_1.bias": (w,),
                block + "mlp.c_fc.weight": (4 * w, w),
                block + "mlp.c_fc.bias": (4 * w,),
                block + "mlp.c_proj.weight": (w, 4 * w),
                block + "mlp.c_proj.bias": (w,),
                block + "ln_2.weight": (w,),
                block + "ln_2.bias": (w,),
            }
        )
    shapes.update(
        {
            "ln_post.weight": (w,),
            "ln_post.bias": (w,),
            "input_proj.weight": (w, inp),
            "input_proj.bias": (w,),
            "output_proj.weight": (out, w),
            "output_proj.bias": (out,),
            "clip_embed.weight": (w, clip),
            "clip_embed.bias": (w,),
        }
    )
    return shapes


def _original_state(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in _original_shapes().items():
        value = 0.3 * torch.randn(shape, generator=generator)
        state[key] = value + 1.0 if key.split(".")[-2].startswith("ln_") and key.endswith("weight") else value
    return state


def _reference_forward(state: dict[str, torch.Tensor], points: torch.Tensor, t: torch.Tensor, clip: torch.Tensor, layers: int, heads: int) -> torch.Tensor:
    """Point-E's forward written out from the original source, on the raw state dict."""

    def linear(x: torch.Tensor, name: str) -> torch.Tensor:
        return x @ state[name + ".weight"].T + state[name + ".bias"]

    def norm(x: torch.Tensor, name: str) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        var = x.var(-1, unbiased=False, keepdim=True)
        return (x - mean) / torch.sqrt(var + 1e-5) * state[name + ".weight"] + state[name + ".bias"]

    def gelu(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))

    width = state["ln_pre.weight"].shape[0]
    half = width // 2
    freqs = torch.tensor([10000.0 ** (-i / half) for i in range(half)])
    angles = t[:, None].float() * freqs
    t_emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    time_token = linear(gelu(linear(t_emb, "time_embed.c_fc")), "time_embed.c_proj")
    clip_token = linear(math.sqrt(clip.shape[1]) * clip, "clip_embed")
    h = linear(points.permute(0, 2, 1), "input_proj")
    h = torch.cat([clip_token[:, None], time_token[:, None], h], dim=1)
    h = norm(h, "ln_pre")
    batch, tokens, _ = h.shape
    d = width // heads
    for i in range(layers):
        block = f"backbone.resblocks.{i}."
        qkv = linear(norm(h, block + "ln_1"), block + "attn.c_qkv").view(batch, tokens, heads, 3 * d)
        q, k, v = qkv[..., :d], qkv[..., d : 2 * d], qkv[..., 2 * d :]
        scale = 1 / math.sqrt(math.sqrt(d))
        weight = torch.softmax(torch.einsum("bthc,bshc->bhts", q * scale, k * scale), dim=-1)
        attended = torch.einsum("bhts,bshc->bthc", weight, v).reshape(batch, tokens, width)
        h = h + linear(attended, block + "attn.c_proj")
        h = h + linear(gelu(linear(norm(h, block + "ln_2"), block + "mlp.c_fc")), block + "mlp.c_proj")
    h = norm(h, "ln_post")[:, 2:]
    return linear(h, "output_proj").permute(0, 2, 1)


def _inputs(batch: int = 2, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    points = torch.randn(batch, 6, TINY.n_ctx, generator=generator)
    t = torch.tensor([3, 900][:batch])
    clip = torch.nn.functional.normalize(torch.randn(batch, TINY.clip_dim, generator=generator), dim=-1)
    return points, t, clip


def test_output_shape():
    points, t, clip = _inputs()
    assert PointETransformer(TINY)(points, t, clip).shape == (2, 12, TINY.n_ctx)


def test_module_names_are_the_original_checkpoint_keys():
    shapes = {key: tuple(value.shape) for key, value in PointETransformer(TINY).state_dict().items()}
    assert list(shapes.items()) == list(_original_shapes().items())


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_original_state_dict_loads_strictly_and_matches_reference(tmp_path: Path, suffix: str):
    state = _original_state()
    path = tmp_path / f"base40m{suffix}"
    torch.save(state, path) if suffix == ".pt" else save_file(state, str(path))
    model = load_point_e(path, TINY)
    points, t, clip = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(points, t, clip), _reference_forward(state, points, t, clip, TINY.layers, TINY.heads), atol=2e-5, rtol=1e-4)


def test_renamed_key_gives_a_one_line_error(tmp_path: Path):
    state = _original_state()
    state["backbone.resblocks.0.attn.qkv.weight"] = state.pop("backbone.resblocks.0.attn.c_qkv.weight")
    path = tmp_path / "renamed.pt"
    torch.save(state, path)
    with pytest.raises(ValueError) as error:
        load_point_e(path, TINY)
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    assert "backbone.resblocks.0.attn.c_qkv.weight" in message and "backbone.resblocks.0.attn.qkv.weight" in message


def test_wrong_config_names_the_shape_mismatch(tmp_path: Path):
    path = tmp_path / "tiny.pt"
    torch.save(_original_state(), path)
    with pytest.raises(ValueError, match="clip_embed.weight"):
        load_point_e(path, PointEConfig(width=32, layers=2, heads=2, n_ctx=64, clip_dim=8))


def test_gradients_reach_the_points():
    points, t, clip = _inputs()
    points.requires_grad_(True)
    PointETransformer(TINY)(points, t, clip).square().sum().backward()
    assert points.grad is not None and points.grad.isfinite().all() and points.grad.abs().sum() > 0


def test_zero_embedding_is_a_different_condition():
    model = PointETransformer(TINY)
    points, t, clip = _inputs()
    with torch.no_grad():
        assert not torch.allclose(model(points, t, clip), model(points, t, torch.zeros_like(clip)))


def test_timestep_embedding_is_cosines_then_sines():
    t = torch.tensor([0.0, 3.5])
    freqs = torch.tensor([1.0, 10000.0 ** (-1 / 3), 10000.0 ** (-2 / 3)])
    expected = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=-1)
    torch.testing.assert_close(timestep_embedding(t, 6), expected)
    odd = timestep_embedding(t, 7)
    torch.testing.assert_close(odd[:, :6], expected)
    assert odd[:, 6].eq(0).all()


def test_scheduler_is_points_e_cosine_schedule():
    scheduler = point_e_scheduler()
    alphas_cumprod = scheduler.alphas_cumprod.double()
    assert len(alphas_cumprod) == TIMESTEPS == 1024
    assert (alphas_cumprod[1:] < alphas_cumprod[:-1]).all()
    # Uncapped betas telescope: the product up to step i is alpha_bar((i + 1) / T) / alpha_bar(0).
    alpha_bar = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    expected = torch.tensor([alpha_bar((i + 1) / TIMESTEPS) / alpha_bar(0.0) for i in range(TIMESTEPS - 1)], dtype=torch.float64)
    torch.testing.assert_close(alphas_cumprod[:-1], expected, rtol=1e-4, atol=1e-7)
    assert scheduler.config.variance_type == "learned_range" and scheduler.config.prediction_type == "epsilon"
