"""The camera half of Zero-1-to-3's conditioning: the relative pose of a target view to the input
view, and the linear projection that joins it to the image embedding.

Two public diffusers layouts store the projection: `cc_projection/` (the diffusers community
pipeline: config `in_channel`/`out_channel`, weights `projection.*`) and `clip_camera_projection/`
(the Stable-Zero123 conversions: config `embedding_dim`/`additional_embeddings`, weights `proj.*`).
Both are one `nn.Linear(embedding + 4, embedding)`; this module reads either into a plain
`nn.Linear`, so no remote code runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from framework.cameras.camera import CameraBatch

PROJECTION_FOLDERS = ("cc_projection", "clip_camera_projection")
POSE_CONVENTIONS = ("zero123", "stable_zero123")
POSE_FEATURES = 4
_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def relative_pose(cameras: CameraBatch, reference: CameraBatch, convention: str = "zero123") -> Tensor:
    """[B, 4] pose features of every camera relative to its input view: `reference` holds one
    camera (shared) or one per camera.

    Zero-1-to-3 measures polar angles from the zenith (polar = 90 - elevation):
    `zero123`: [polar_target - polar_input (radians), sin(d_azimuth), cos(d_azimuth), d_distance];
    `stable_zero123`: the last entry is the input view's own polar angle (radians) instead, as
    Stable Zero123 was trained (its distances are fixed).
    """
    if convention not in POSE_CONVENTIONS:
        raise ValueError(f"pose convention={convention!r}: expected one of {POSE_CONVENTIONS}")
    if reference.batch_size not in (1, cameras.batch_size):
        raise ValueError(f"{reference.batch_size} input-view cameras for {cameras.batch_size} target cameras: need 1 or as many")
    elevation, azimuth = cameras.elevation_deg, cameras.azimuth_deg
    input_elevation = reference.elevation_deg.to(elevation)
    d_polar = torch.deg2rad(input_elevation - elevation)
    d_azimuth = torch.deg2rad(azimuth - reference.azimuth_deg.to(azimuth))
    if convention == "zero123":
        last = cameras.distance - reference.distance.to(cameras.distance)
    else:
        last = torch.deg2rad(90.0 - input_elevation).expand_as(elevation)
    return torch.stack([d_polar, torch.sin(d_azimuth), torch.cos(d_azimuth), last], dim=-1)


def camera_projection(embedding_dim: int) -> nn.Linear:
    """A fresh projection that passes the image embedding through unchanged and ignores the pose
    (how Zero-1-to-3 initialised it, so fine-tuning starts from the image-variation model)."""
    projection = nn.Linear(embedding_dim + POSE_FEATURES, embedding_dim)
    with torch.no_grad():
        projection.weight.zero_()
        projection.weight[:, :embedding_dim].copy_(torch.eye(embedding_dim))
        projection.bias.zero_()
    return projection


def load_camera_projection(folder: str | Path) -> nn.Linear:
    """The projection of a local model folder in either layout.

    Raises:
        FileNotFoundError: naming the folder when it holds neither layout.
    """
    folder = Path(folder)
    for name in PROJECTION_FOLDERS:
        for weights_file in _WEIGHT_FILES:
            path = folder / name / weights_file
            if path.is_file():
                return _linear_from(_read_weights(path), path)
    raise FileNotFoundError(f"model folder {str(folder)!r} has no camera projection: expected {' or '.join(f'{n}/{_WEIGHT_FILES[0]}' for n in PROJECTION_FOLDERS)}")


def save_camera_projection(projection: nn.Linear, folder: str | Path) -> None:
    """Write `projection` in the `cc_projection/` layout (fp16 safetensors and its config)."""
    target = Path(folder) / "cc_projection"
    target.mkdir(parents=True, exist_ok=True)
    config = {"_class_name": "CCProjection", "in_channel": projection.in_features, "out_channel": projection.out_features}
    (target / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tensors = {f"projection.{key}": value.detach().to(torch.float16).contiguous().cpu() for key, value in projection.state_dict().items()}
    save_file(tensors, str(target / _WEIGHT_FILES[0]))


def _read_weights(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def _linear_from(state: dict[str, Tensor], path: Path) -> nn.Linear:
    for prefix in ("projection.", "proj."):
        weight, bias = state.get(prefix + "weight"), state.get(prefix + "bias")
        if weight is not None:
            linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
            linear.load_state_dict({"weight": weight, **({"bias": bias} if bias is not None else {})})
            if linear.in_features != linear.out_features + POSE_FEATURES:
                raise ValueError(f"{path}: a projection from {linear.in_features} to {linear.out_features} features, expected embedding + {POSE_FEATURES} pose features")
            return linear.float()
    raise ValueError(f"{path}: no 'projection.weight' or 'proj.weight' among its keys {sorted(state)[:6]}")
