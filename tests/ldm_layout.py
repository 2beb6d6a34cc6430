"""The original LDM (CompVis `openaimodel.UNetModel`) key names of a diffusers SD-style UNet, to
write tiny checkpoints in the layout real ones have (MVDream's `camera_embed` included). Written
from LDM's module structure; the tests check it by converting back with diffusers' helpers."""

from __future__ import annotations

from diffusers import UNet2DConditionModel
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


