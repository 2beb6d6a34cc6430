"""The original LDM (CompVis `openaimodel.UNetModel`, `AutoencoderKL`) key names of a diffusers
SD-style UNet and VAE, to write tiny checkpoints in the layout real ones have (MVDream's
`camera_embed` included; RichDreamer's VAE under `first_stage_model.`). Written from LDM's module
structure; the tests check it by converting back with diffusers' helpers."""

from __future__ import annotations

from diffusers import AutoencoderKL, UNet2DConditionModel
from torch import Tensor

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "class_embedding.linear_1": "camera_embed.0",
    "class_embedding.linear_2": "camera_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def ldm_unet_state_dict(unet: UNet2DConditionModel, prefix: str = "model.diffusion_model.") -> dict[str, Tensor]:
    """`unet`'s weights under LDM key names (MVDream's `camera_embed` for a class embedding)."""
    names = _ldm_block_names(unet)
    out = {}
    for key, value in unet.state_dict().items():
        for diffusers_name, ldm_name in {**_TOP, **names}.items():
            if key.startswith(diffusers_name + "."):
                rest = key[len(diffusers_name) + 1 :]
                if ".resnets." in diffusers_name or diffusers_name.startswith("mid_block.resnets"):
                    head, _, tail = rest.partition(".")
                    rest = f"{_RESNET[head]}.{tail}"
                out[prefix + f"{ldm_name}.{rest}"] = value
                break
        else:
            raise KeyError(f"no LDM name for {key}")
    return out


def _ldm_block_names(unet: UNet2DConditionModel) -> dict[str, str]:
    names: dict[str, str] = {}
    config = unet.config
    levels, per_block = len(config.block_out_channels), config.layers_per_block
    k = 1
    for level, block in enumerate(unet.down_blocks):
        for i in range(per_block):
            names[f"down_blocks.{level}.resnets.{i}"] = f"input_blocks.{k}.0"
            if getattr(block, "attentions", None):
                names[f"down_blocks.{level}.attentions.{i}"] = f"input_blocks.{k}.1"
            k += 1
        if level < levels - 1:
            names[f"down_blocks.{level}.downsamplers.0.conv"] = f"input_blocks.{k}.0.op"
            k += 1
    names.update({"mid_block.resnets.0": "middle_block.0", "mid_block.attentions.0": "middle_block.1", "mid_block.resnets.1": "middle_block.2"})
    k = 0
    for level, block in enumerate(unet.up_blocks):
        has_attention = bool(getattr(block, "attentions", None))
        for i in range(per_block + 1):
            names[f"up_blocks.{level}.resnets.{i}"] = f"output_blocks.{k}.0"
            if has_attention:
                names[f"up_blocks.{level}.attentions.{i}"] = f"output_blocks.{k}.1"
            if i == per_block and level < levels - 1:
                names[f"up_blocks.{level}.upsamplers.0.conv"] = f"output_blocks.{k}.{2 if has_attention else 1}.conv"
            k += 1
    # Longest names first, so "down_blocks.0.resnets.1" is not matched by "down_blocks.0.resnets.1x".
    return dict(sorted(names.items(), key=lambda item: -len(item[0])))




_VAE_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "conv_shortcut": "nin_shortcut"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def ldm_vae_state_dict(vae: AutoencoderKL, prefix: str = "first_stage_model.") -> dict[str, Tensor]:
    """`vae`'s weights under LDM key names (its attention projections as 1x1 convolutions)."""
    levels = len(vae.config.block_out_channels)
    out = {}
    for key, value in vae.state_dict().items():
        name = key.replace("conv_norm_out", "norm_out")
        for side in ("encoder", "decoder"):
            name = name.replace(f"{side}.mid_block.resnets.0.", f"{side}.mid.block_1.").replace(f"{side}.mid_block.resnets.1.", f"{side}.mid.block_2.")
            name = name.replace(f"{side}.mid_block.attentions.0.", f"{side}.mid.attn_1.")
        parts = name.split(".")
        if parts[1] == "down_blocks":
            parts[1:3] = ["down", parts[2]]
        elif parts[1] == "up_blocks":  # LDM numbers the decoder's levels from the finest
            parts[1:3] = ["up", str(levels - 1 - int(parts[2]))]
        name = ".".join(parts).replace(".resnets.", ".block.").replace(".downsamplers.0.", ".downsample.").replace(".upsamplers.0.", ".upsample.")
        if ".block." in name or ".block_" in name:
            head, layer, leaf = name.rsplit(".", 2)
            name = f"{head}.{_VAE_RESNET[layer]}.{leaf}"
        if ".attn_1." in name:
            head, _, rest = name.partition(".attn_1.")
            layer, _, leaf = rest.rpartition(".")
            name = f"{head}.attn_1.{_VAE_ATTENTION[layer]}.{leaf}"
            if value.dim() == 2:
                value = value[:, :, None, None]
        out[prefix + name] = value
    return out
