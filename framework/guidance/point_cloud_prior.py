"""A point-cloud prior folder in Point-E's layout: `model.safetensors` (the `PointETransformer`
state dict under Point-E's key names), `config.json` (its `PointEConfig` fields and the
model-space convention), `text_encoder.safetensors` + `text_encoder.json` (a bag-of-words text
encoder: embedding table, vocabulary and width) and `provenance.json`.

Model space is `data * scale + bias` per channel (xyz, rgb). Point-E's public model takes rgb in
0..255; a prior trained here may take rgb in 0..1, so config.json records the scales, the biases
and the per-channel bounds that sampling clips its x0 estimate to, and a loader tells the
conventions apart from the file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Protocol, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from framework.guidance import point_e
from framework.guidance.bag_of_words import BagOfWordsTextEncoder
from framework.guidance.clip_text_vectors import ClipTextVectors
from framework.guidance.point_e import PointEConfig, PointETransformer, load_point_e
from framework.utils.atomic import atomic_directory

CONVENTION_KEYS = ("channel_scales", "channel_biases", "clip_bounds")


class TextVectorEncoder(Protocol):
    """Prompts -> unit-norm text vectors [B, D], zeros for "" (Point-E's unconditional input):
    the bundled bag-of-words encoder, or CLIP's projected text feature."""

    def encode(self, prompts: list[str]) -> Tensor: ...


@dataclass
class PointCloudPrior:
    """A loaded point prior, float32, in eval mode, with its model-space convention.

    `scales`, `biases` and `bounds` are [6] (xyz, rgb): model = data * scale + bias, and sampling
    clips its x0 estimates to [-bounds, bounds].
    """

    model: PointETransformer
    text_encoder: TextVectorEncoder
    scales: Tensor
    biases: Tensor
    bounds: Tensor
    provenance: dict

    def to_model_space(self, xyz: Tensor, rgb: Tensor) -> Tensor:
        """Points xyz, rgb [B, N, 3] (rgb in this prior's data range) -> [B, 6, N]."""
        return to_model_space(xyz, rgb, self.scales, self.biases)

    def from_model_space(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """[B, 6, N] -> xyz, rgb [B, N, 3]."""
        return from_model_space(points, self.scales, self.biases)


def to_model_space(xyz: Tensor, rgb: Tensor, scales: Sequence[float] | Tensor, biases: Sequence[float] | Tensor) -> Tensor:
    """xyz, rgb [B, N, 3] -> channels-first model space [B, 6, N]."""
    data = torch.cat([xyz, rgb], dim=-1)
    return (data * _like(scales, data) + _like(biases, data)).transpose(1, 2)


def from_model_space(points: Tensor, scales: Sequence[float] | Tensor, biases: Sequence[float] | Tensor) -> tuple[Tensor, Tensor]:
    """[B, 6, N] model space -> xyz, rgb [B, N, 3]."""
    data = (points.transpose(1, 2) - _like(biases, points)) / _like(scales, points)
    return data[..., :3], data[..., 3:]


def _like(values: Sequence[float] | Tensor, other: Tensor) -> Tensor:
    return torch.as_tensor(values, dtype=other.dtype, device=other.device)


def save_point_cloud_prior(
    folder: str | Path,
    model: PointETransformer,
    text_encoder: BagOfWordsTextEncoder,
    convention: tuple[Sequence[float], Sequence[float], Sequence[float]],
    provenance: dict,
) -> None:
    """Write the prior atomically (fp16 weights; the live modules stay float32); `convention` is
    its (channel scales, channel biases, clip bounds)."""
    config = {**asdict(model.config), **{key: list(values) for key, values in zip(CONVENTION_KEYS, convention)}}
    with atomic_directory(folder) as tmp:
        save_file({k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
        save_file({"embedding.weight": text_encoder.embedding.weight.detach().to(torch.float16).contiguous()}, str(tmp / "text_encoder.safetensors"))
        for name, record in (("config", config), ("text_encoder", {"vocabulary": text_encoder.vocabulary, "dim": text_encoder.dim}), ("provenance", provenance)):
            (tmp / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
        for weights in tmp.glob("*.safetensors"):
            weights.chmod(0o644)  # safetensors writes 0600; shipped weights are read by everyone


def load_point_cloud_prior(folder: str | Path, device: str | torch.device = "cpu") -> PointCloudPrior:
    """Load a folder written by `save_point_cloud_prior` onto `device`.

    Raises:
        FileNotFoundError: naming the folder and its first missing file.
    """
    folder = Path(folder)
    for name in ("model.safetensors", "config.json", "text_encoder.safetensors", "text_encoder.json"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"point prior folder {folder} is incomplete: {name} is missing")
    config = json.loads((folder / "config.json").read_text())
    missing = [key for key in (*(f.name for f in fields(PointEConfig)), *CONVENTION_KEYS) if key not in config]
    if missing:
        raise ValueError(f"{folder / 'config.json'} lacks {', '.join(missing)}: not a point prior config")
    model = load_point_e(folder / "model.safetensors", PointEConfig(**{f.name: config[f.name] for f in fields(PointEConfig)}))
    text = json.loads((folder / "text_encoder.json").read_text())
    text_encoder = BagOfWordsTextEncoder(text["vocabulary"], text["dim"])
    text_encoder.load_state_dict(load_file(str(folder / "text_encoder.safetensors")))
    provenance_path = folder / "provenance.json"
    provenance = json.loads(provenance_path.read_text()) if provenance_path.is_file() else {}
    convention = [torch.tensor(config[key], dtype=torch.float32) for key in CONVENTION_KEYS]
    return PointCloudPrior(model.to(device).eval(), text_encoder.to(device).eval(), *convention, provenance)


def load_point_cloud_model(pretrained: str | Path, clip_model: str | None = None, device: str | torch.device = "cpu") -> PointCloudPrior:
    """A point prior from a folder in this layout, or from a Point-E checkpoint file (`.pt` or
    `.safetensors`, Point-E's key names) with the CLIP text encoder `clip_model` and Point-E's own
    convention (rgb 0..255, every channel clipped to [-1, 1])."""
    path = Path(pretrained)
    if path.is_dir():
        return load_point_cloud_prior(path, device)
    if not path.is_file():
        raise FileNotFoundError(f"point prior {str(pretrained)!r}: neither a prior folder nor a Point-E checkpoint file")
    if clip_model is None:
        raise ValueError(f"point prior {str(pretrained)!r} is a Point-E checkpoint: it needs clip_model=<CLIP ViT-L/14 folder or hub id>")
    model = load_point_e(path)
    text = ClipTextVectors(clip_model)
    if text.model.config.projection_dim != model.config.clip_dim:
        raise ValueError(f"clip_model={clip_model!r} gives {text.model.config.projection_dim}-wide text features; {path} reads {model.config.clip_dim}")
    convention = [torch.tensor(values, dtype=torch.float32) for values in (point_e.CHANNEL_SCALES, point_e.CHANNEL_BIASES, (1.0,) * 6)]
    return PointCloudPrior(model.to(device).eval(), text.to(device), *convention, {"checkpoint": str(path), "clip_model": clip_model})
