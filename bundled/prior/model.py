"""Architecture of the bundled prior: a small pixel-space text-to-image model in the DeepFloyd IF
stage-I layout (T5 encoder, UNet2DConditionModel with text-pooled time embedding, DDPM scheduler),
so the same guidance class that loads IF loads it.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers import DDPMScheduler, UNet2DConditionModel
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

from bundled.world.objects import COLOURS, OBJECTS
from framework.guidance.prompts import VIEWS

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
MAX_TOKENS = 12
_EXTRA_WORDS = ("a", "an", "the", "of", "view", ",")
# Words added after the first weights: appended, so every older word keeps its token id.
_NORMAL_MAP_WORDS = ("normal", "map")


@dataclass(frozen=True)
class PriorArchitecture:
    resolution: int = 64
    text_width: int = 128
    text_layers: int = 2
    block_channels: tuple[int, ...] = (24, 48, 96, 128)
    layers_per_block: int = 1
    # diffusers reads `attention_head_dim` as the number of heads of each attention block (a legacy
    # name); a tuple sets one per level. Here heads of 24, 48, 32 and 32 channels. The first weights used 32 heads
    # everywhere (3- and 4-channel heads) and bound shape to the object word far worse (README).
    attention_head_dim: int | tuple[int, ...] = (1, 1, 3, 4)
    cross_attention_levels: int = 2  # coarsest levels that read the text tokens
    self_attention_levels: int = 2  # coarsest levels whose attention blocks also self-attend


def build_tokenizer(normal_map_words: bool = True) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the bundled world's vocabulary (unknown words map to <unk>);
    without `normal_map_words`, the vocabulary of the first shipped weights."""
    words = [PAD, EOS, UNK, *_EXTRA_WORDS, *COLOURS, *OBJECTS, *VIEWS, *(_NORMAL_MAP_WORDS if normal_map_words else ())]
    vocab = {word: i for i, word in enumerate(dict.fromkeys(words))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
    core.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, vocab[EOS])])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, eos_token=EOS, unk_token=UNK, model_max_length=MAX_TOKENS
    )


def build_text_encoder(arch: PriorArchitecture, vocab_size: int) -> T5EncoderModel:
    config = T5Config(
        vocab_size=vocab_size,
        d_model=arch.text_width,
        d_kv=arch.text_width // 4,
        d_ff=2 * arch.text_width,
        num_layers=arch.text_layers,
        num_heads=4,
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5EncoderModel(config)


def build_unet(
    arch: PriorArchitecture, in_channels: int = 3, text_conditioned: bool = True, camera_features: int = 0, out_channels: int = 3
) -> UNet2DConditionModel:
    """The denoiser of `out_channels`-channel images. `text_conditioned`: IF's layout (T5 tokens projected to the cross-attention
    width, their pooled embedding added to the time embedding); otherwise Stable Diffusion's plain
    cross-attention to `block_channels[-1]`-wide tokens (Zero-1-to-3's projected image + pose
    embedding), with `in_channels` counting any image concatenated to the noisy sample.
    `camera_features` > 0 adds MVDream's camera embedding (diffusers' projection class embedding
    of that many inputs, added to the time embedding)."""
    n = len(arch.block_channels)
    if not 0 < arch.cross_attention_levels <= n or not 0 <= arch.self_attention_levels <= arch.cross_attention_levels:
        raise ValueError(
            f"cross_attention_levels={arch.cross_attention_levels} and self_attention_levels={arch.self_attention_levels} "
            f"must satisfy 0 < cross <= {n} (levels) and 0 <= self <= cross"
        )
    if isinstance(arch.attention_head_dim, tuple) and len(arch.attention_head_dim) != n:
        raise ValueError(f"attention_head_dim={arch.attention_head_dim} needs one head count per level of block_channels={arch.block_channels}")
    plain, cross = n - arch.cross_attention_levels, arch.cross_attention_levels
    down = ("DownBlock2D",) * plain + ("CrossAttnDownBlock2D",) * cross
    up = ("CrossAttnUpBlock2D",) * cross + ("UpBlock2D",) * plain
    # Self-attention over 64x64 or 32x32 pixels costs most of a CPU step; cross-attention to the
    # 12 text tokens is cheap there, so finer levels may read the text without self-attending.
    cross_only = tuple(level < n - arch.self_attention_levels for level in range(n))
    text = {
        "encoder_hid_dim": arch.text_width,
        "encoder_hid_dim_type": "text_proj",
        "addition_embed_type": "text",
        "addition_embed_type_num_heads": min(64, arch.block_channels[-1]),  # diffusers' default, capped for tiny test models
    }
    return UNet2DConditionModel(
        sample_size=arch.resolution,
        in_channels=in_channels,
        out_channels=out_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=arch.block_channels,
        layers_per_block=arch.layers_per_block,
        only_cross_attention=cross_only,
        cross_attention_dim=arch.block_channels[-1],
        attention_head_dim=arch.attention_head_dim,
        norm_num_groups=8,
        **(text if text_conditioned else {}),
        **({"class_embed_type": "projection", "projection_class_embeddings_input_dim": camera_features} if camera_features else {}),
    )


def build_scheduler() -> DDPMScheduler:
    """IF's cosine schedule. The model predicts v, not epsilon: at the top timesteps the cosine
    schedule leaves almost no signal (alpha_bar(999) ~ 2e-9), and a small epsilon model's x0
    estimates there are noise amplified 10^4 times; v stays well-posed (measured: an epsilon model
    after 400 steps denoised well from t = 600 but sampled pure noise from t = 999)."""
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        variance_type="fixed_small",
        clip_sample=True,
    )
