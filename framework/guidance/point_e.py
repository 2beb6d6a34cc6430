"""Point-E's text-conditioned base point-cloud denoiser (`base40M-textvec`), our own port.

GSGEN uses this network as its 3D prior: score distillation on Gaussian centres and colours
treated as a point cloud. The module and parameter names follow OpenAI's checkpoint
(`base_40m_textvec.pt`), so its state dict loads strictly without renaming.

Layout of the original: the points `[B, 6, N]` (xyz, rgb) are projected to `width` channels per
point; two extra tokens go in front, first the projected CLIP embedding, then the MLP-embedded
timestep; a pre-norm transformer runs over `2 + N` tokens, between `ln_pre` and `ln_post`; the two
extra tokens are dropped and each point is projected to 12 channels: the 6 epsilon values, then 6
variance interpolation values (guided-diffusion's "learned_range").

The CLIP text encoder (ViT-L/14, L2-normalised `encode_text` features) is not part of this port:
the caller supplies that embedding. As in Point-E, the model scales it by `sqrt(clip_dim)` before
`clip_embed`, and the unconditional branch of classifier-free guidance is the zero embedding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from safetensors.torch import load_file
from torch import nn

# The base model's diffusion (point_e/diffusion/configs.py, BASE_DIFFUSION_CONFIG).
TIMESTEPS = 1024
BETA_SCHEDULE = "cosine"  # Nichol & Dhariwal's: alpha_bar(t) = cos((t + 0.008) / 1.008 * pi / 2) ** 2
PREDICTION = "epsilon"
VARIANCE = "learned_range"  # sigma is learned: output channels 6..11
# Model space = data * scale + bias, per channel (xyz, then rgb in 0..255): xyz doubled, rgb to [-1, 1].
CHANNEL_SCALES = (2.0, 2.0, 2.0, 2.0 / 255.0, 2.0 / 255.0, 2.0 / 255.0)
CHANNEL_BIASES = (0.0, 0.0, 0.0, -1.0, -1.0, -1.0)


@dataclass(frozen=True)
class PointEConfig:
    """Sizes of the denoiser; the defaults are `base40M-textvec`'s (point_e/models/configs.py).

    `n_ctx` is the point count the model was trained on; the network has no positional
    embedding, so it runs on any count.
    """

    input_channels: int = 6
    output_channels: int = 12
    n_ctx: int = 1024
    width: int = 512
    layers: int = 12
    heads: int = 8
    clip_dim: int = 768


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of (possibly fractional) timesteps.

    Args:
        timesteps: [B].
        dim: feature count; the first half are cosines, the second half sines, at frequencies
            `max_period ** (-i / (dim // 2))`, and an odd `dim` ends with one zero.

    Returns:
        [B, dim] float32.
    """
    half = dim // 2
    exponents = torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    angles = timesteps.float()[:, None] * torch.exp(-math.log(max_period) * exponents)[None]
    features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    return F.pad(features, (0, dim % 2))


class MLP(nn.Module):
    """Two linear layers around an (exact) GELU, four times wider inside."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class SelfAttention(nn.Module):
    """Multi-head self-attention whose fused projection is laid out per head as `[q | k | v]`.

    `c_qkv`'s output splits into `heads` groups of `3 * head_dim` channels, each group holding its
    head's query, key and value in that order (not the all-q, all-k, all-v order of `nn.MultiheadAttention`).
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.c_qkv = nn.Linear(width, 3 * width)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        grouped = self.c_qkv(x).view(batch, tokens, self.heads, 3 * (width // self.heads)).transpose(1, 2)
        q, k, v = grouped.chunk(3, dim=-1)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.c_proj(out.transpose(1, 2).reshape(batch, tokens, width))


class ResidualBlock(nn.Module):
    """Pre-norm transformer block: attention, then MLP, each added back to its input."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = SelfAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = MLP(width)
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Backbone(nn.Module):
    """The stack of residual blocks (`backbone.resblocks.*` in the checkpoint)."""

    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualBlock(width, heads) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


class PointETransformer(nn.Module):
    """Point-E's CLIP-conditioned point-cloud denoiser, key-compatible with its checkpoints."""

    def __init__(self, config: PointEConfig | None = None) -> None:
        super().__init__()
        self.config = config or PointEConfig()
        c = self.config
        # Registration order is the checkpoint's key order.
        self.time_embed = MLP(c.width)
        self.ln_pre = nn.LayerNorm(c.width)
        self.backbone = Backbone(c.width, c.layers, c.heads)
        self.ln_post = nn.LayerNorm(c.width)
        self.input_proj = nn.Linear(c.input_channels, c.width)
        self.output_proj = nn.Linear(c.width, c.output_channels)
        self.clip_embed = nn.Linear(c.clip_dim, c.width)

    def forward(self, points: torch.Tensor, timesteps: torch.Tensor, clip_embedding: torch.Tensor) -> torch.Tensor:
        """Predict noise and variance for noisy points in model space.

        Args:
            points: [B, input_channels, N], channels first (scaled by `CHANNEL_SCALES`/`CHANNEL_BIASES`).
            timesteps: [B], integer or fractional, in [0, TIMESTEPS).
            clip_embedding: [B, clip_dim], unit-norm CLIP text features; zeros for the unconditional branch.

        Returns:
            [B, output_channels, N]: epsilon for each input channel, then the variance values.
        """
        width = self.config.width
        time_token = self.time_embed(timestep_embedding(timesteps, width).to(points.dtype))
        clip_token = self.clip_embed(math.sqrt(clip_embedding.shape[1]) * clip_embedding)
        h = self.input_proj(points.transpose(1, 2))
        h = torch.cat([clip_token[:, None], time_token[:, None], h], dim=1)
        h = self.ln_post(self.backbone(self.ln_pre(h)))
        return self.output_proj(h[:, 2:]).transpose(1, 2)


def point_e_scheduler() -> DDPMScheduler:
    """The base model's training diffusion as a diffusers scheduler.

    diffusers' `squaredcos_cap_v2` is the same discretisation as Point-E's "cosine" schedule
    (`beta_i = min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999)`); Point-E's
    `clip_denoised` clamps the predicted sample to [-1, 1] like `clip_sample`.
    """
    return DDPMScheduler(
        num_train_timesteps=TIMESTEPS,
        beta_schedule="squaredcos_cap_v2",
        prediction_type=PREDICTION,
        variance_type=VARIANCE,
        clip_sample=True,
        clip_sample_range=1.0,
    )


def config_from_state(state: dict[str, torch.Tensor]) -> PointEConfig:
    """The sizes of a Point-E state dict, read from its shapes. The head count leaves no trace in
    them: Point-E's models all use 64 channels a head (base40M: 512 / 8)."""
    if "input_proj.weight" not in state:
        return PointEConfig()  # not Point-E's layout: the strict load below names what is missing
    width, input_channels = state["input_proj.weight"].shape
    layers = len({key.split(".")[2] for key in state if key.startswith("backbone.resblocks.")})
    return PointEConfig(
        input_channels=input_channels,
        output_channels=state["output_proj.weight"].shape[0],
        width=width,
        layers=layers,
        heads=max(1, width // 64),
        clip_dim=state["clip_embed.weight"].shape[1],
    )


def load_point_e(path: str | Path, config: PointEConfig | None = None) -> PointETransformer:
    """A Point-E denoiser with the weights of a `.pt` (read with `weights_only=True`) or
    `.safetensors` state dict; `config` None: read from the weights' shapes.

    Raises:
        ValueError: the file's keys or shapes do not fit the config (one line, naming the file).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    model = PointETransformer(config or config_from_state(state))
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    reshaped = [f"{key} {tuple(state[key].shape)}!={tuple(value.shape)}" for key, value in expected.items() if key in state and state[key].shape != value.shape]
    problems = {"missing": missing, "unexpected": unexpected, "shape": reshaped}
    if any(problems.values()):
        found = "; ".join(f"{name} ({len(keys)}): {', '.join(keys[:3])}" for name, keys in problems.items() if keys)
        raise ValueError(f"{path} is not a Point-E state dict for {model.config}: {found}")
    model.load_state_dict(state, strict=True)
    return model
