"""DreamGaussian's texture stage target: the prior's multi-step denoising of the render.

DreamGaussian is configs (`conf/experiment/dreamgaussian.yaml`): stage "gaussians" runs SDS on
densified 3D Gaussians; the conversion `GaussiansToTexturedMesh` meshes and bakes them; stage
"texture" swaps the main slot's SDS step for `DenoisedTarget`: each step the prior denoises the
render from a small noise level (I_fine = denoise(I_coarse + eps(t_start)), a few DDIM steps) and
the texture is fitted to it with an MSE.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from framework.guidance.condition import Condition
from framework.guidance.denoising import denoise
from framework.guidance.sds import ScoreDistillation
from framework.schedules import as_scalar, value_at


class DenoisedTarget:
    """A slot estimator: MSE between the render and `denoise` of it.

    Args:
        strength: noise level t_start / T (a number or [[step, value], ...]).
        n_steps: DDIM steps of the target.
        guidance_scale: classifier-free guidance of the denoising (None: the SDS scale). Only the
            texture changes in this stage; 2 instead of 5 moved the colour error of the default
            run by less than 0.003 (docs/dreamgaussian_notes.md).
    """

    def __init__(self, strength: Any = 0.3, n_steps: int = 4, guidance_scale: float | None = None) -> None:
        self.strength = as_scalar(strength)
        self.n_steps = n_steps
        self.guidance_scale = guidance_scale

    def __call__(self, guidance: ScoreDistillation, rgb: Tensor, condition: Condition, step: int) -> dict[str, Tensor]:
        strength = value_at(self.strength, step)
        target = denoise(guidance, rgb.detach(), condition, strength, self.n_steps, self.guidance_scale)
        return {"loss_refine": F.mse_loss(rgb, target.to(rgb)), "refine_strength": torch.tensor(strength)}
