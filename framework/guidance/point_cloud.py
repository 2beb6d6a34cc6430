"""Score distillation on a point cloud: GSGEN's 3D prior on the Gaussians' centres.

The slot's input is a representation tensor, not a render: `representation.point_cloud` ([N, 6]:
the Gaussians' centres and colours) or `representation.means` ([N, 3]; the colour channels are
then the prior's mid-grey). Each step takes `n_points` of them at random (the prior was trained on
clouds of that size), maps them to the prior's model space and runs the same estimate as any
image prior: timesteps, noise, classifier-free guidance (Point-E's unconditional input is the
zero text vector), w(t), the estimator's direction. Only the centres receive the gradient unless
`colour_gradients`. Samples are [1, 6, n_points, 1], so the image machinery's broadcasting holds.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from framework.guidance.condition import Condition
from framework.guidance.estimators.base import ScoreEstimator
from framework.guidance.point_cloud_prior import load_point_cloud_model, to_model_space
from framework.guidance.point_e import point_e_scheduler
from framework.guidance.sds import ScoreDistillation, model_fingerprint


class PointCloudGuidance(ScoreDistillation):
    """Args:
    pretrained: a point prior folder (the bundled one's layout) or a Point-E checkpoint file.
    clip_model: for a Point-E checkpoint, the CLIP ViT-L/14 text encoder (hub id or folder).
    n_points: points per step (Point-E's base model: 1024).
    colour_gradients: let the step reach the colours too (GSGEN's 3D prior moves centres only).
    **kwargs: see `ScoreDistillation` (view-dependent prompts are off: a cloud has no view).
    """

    def __init__(self, pretrained: str, clip_model: str | None = None, n_points: int = 1024, colour_gradients: bool = False, **kwargs: Any) -> None:
        if n_points < 1:
            raise ValueError(f"n_points={n_points}: expected >= 1")
        kwargs["view_dependent"] = False
        kwargs.setdefault("cuda_graphs", False)
        kwargs.setdefault("embedding_cache_dir", None)  # a text vector costs nothing to recompute
        super().__init__(**kwargs)
        self.pretrained = str(pretrained)
        self.prior = load_point_cloud_model(pretrained, clip_model, self.device)
        self.prior.model.requires_grad_(False).to(self.dtype)
        self.scheduler = point_e_scheduler()
        self.n_points = n_points
        self.colour_gradients = colour_gradients

    @property
    def model_key(self) -> str:
        return f"point-cloud:{model_fingerprint(self.pretrained, '.')}"

    def encode_text(self, prompts: list[str]) -> Tensor:
        return self.prior.text_encoder.encode(prompts)

    def encode_images(self, rgb: Tensor) -> Tensor:
        raise NotImplementedError("a point-cloud prior scores points: give the slot input=representation.point_cloud or representation.means")

    def decode_samples(self, x0: Tensor, size: tuple[int, int]) -> Tensor:
        raise NotImplementedError("a point-cloud prior has no image to decode")

    def conditioning(self, condition: Condition) -> tuple[Tensor, Tensor]:
        """(the prompt's text vector [1, D], the zero vector): one cloud per step."""
        if not condition.text or not condition.text.strip():
            raise ValueError(f"{type(self).__name__} is a text-to-point-cloud prior: it needs prompt=\"...\" (got {condition.text!r})")
        vector = self.prompt_embeddings(condition.text)["base"][None]
        return vector, torch.zeros_like(vector)

    def model_output(self, noisy: Tensor, timesteps: Tensor, *conditioning: Tensor) -> Tensor:
        (vector,) = conditioning
        return self.prior.model(noisy[..., 0].to(self.device), timesteps, vector)[:, : noisy.shape[1], :, None]

    def as_points(self, points: Tensor, step_generator: torch.Generator) -> Tensor:
        """[N, 3] or [N, 6] (xyz, rgb in 0..1) -> a model-space sample [1, 6, n_points, 1] of
        `n_points` of them drawn without replacement (with, if N is smaller)."""
        if points.dim() != 2 or points.shape[1] not in (3, 6):
            raise ValueError(f"point-cloud guidance: expected points [N, 3] or [N, 6], got {tuple(points.shape)}")
        count = points.shape[0]
        if count >= self.n_points:
            index = torch.randperm(count, generator=step_generator)[: self.n_points]
        else:
            index = torch.randint(count, (self.n_points,), generator=step_generator)
        chosen = points[index.to(points.device)]
        xyz = chosen[:, :3]
        rgb = chosen[:, 3:] if points.shape[1] == 6 else torch.full_like(xyz, 0.5)
        if not self.colour_gradients:
            rgb = rgb.detach()
        return to_model_space(xyz[None], rgb[None], self.prior.scales.to(xyz), self.prior.biases.to(xyz))[..., None]

    def __call__(self, points: Tensor, condition: Condition, step: int, estimator: ScoreEstimator | None = None) -> dict[str, Tensor]:
        """Score distillation of the cloud `points` ([N, 3] or [N, 6]) under `condition.text`."""
        return self.estimate(self.as_points(points, self.generator), condition, step, estimator)
