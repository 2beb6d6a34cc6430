"""VSD (ProlificDreamer's variational score distillation).

A LoRA copy of the prior, conditioned on the camera, learns the distribution of the current renders
(`loss_lora`: the diffusion loss on them); its noise prediction replaces SDS's random noise in the
direction: eps_hat_pretrained(x_t; y) - eps_lora(x_t; y, camera). SDS then pulls the renders
towards the prior's mode; VSD pulls their distribution towards the prior's, which is why it does
not over-saturate or over-smooth.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from framework.guidance.camera_condition import camera_condition
from framework.guidance.camera_embedding import CameraEmbedding
from framework.guidance.condition import Condition
from framework.guidance.estimators.base import ScoreEstimator
from framework.guidance.lora import LoraWeights, add_lora, enabled

if TYPE_CHECKING:
    from framework.guidance.sds import ScoreDistillation


class VariationalScoreDistillation(ScoreEstimator):
    """Args:
    lora_rank, lora_alpha: the adapter on the UNet's attention projections (alpha None: the
        rank, a scaling of 1).
    camera_dropout: the share of the LoRA's training samples whose camera is zeroed, so it also
        learns the renders' distribution without one.
    lora_t_min: the LoRA trains on timesteps in [lora_t_min, 1) of the training steps.
    learning_rate: the LoRA's and camera embedding's (`guidance.<slot>.lora` and
        `guidance.<slot>.camera_embedding`) where the stage's learning_rates name neither.
    seed: of the adapter's initial weights (the global random state is left as it is).
    """

    name = "vsd"

    def __init__(self, lora_rank: int = 4, lora_alpha: float | None = None, camera_dropout: float = 0.1, lora_t_min: float = 0.0, learning_rate: float = 1e-3, seed: int = 0) -> None:
        if not 0.0 <= camera_dropout <= 1.0 or not 0.0 <= lora_t_min < 1.0:
            raise ValueError(f"camera_dropout={camera_dropout} and lora_t_min={lora_t_min}: expected fractions in [0, 1]")
        self.lora_rank, self.lora_alpha, self.seed = lora_rank, lora_alpha, seed
        self.camera_dropout = camera_dropout
        self.lora_t_min = lora_t_min
        self.learning_rate = learning_rate
        self.lora: LoraWeights | None = None
        self.camera_embedding: CameraEmbedding | None = None

    def bind(self, guidance: ScoreDistillation) -> None:
        unet = getattr(guidance, "unet", None)
        if unet is None:
            raise ValueError(f"estimator=vsd needs a guidance with a diffusers UNet; {type(guidance).__name__} has none")
        self.lora = add_lora(unet, self.lora_rank, self.lora_alpha, seed=self.seed).to(guidance.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.camera_embedding = CameraEmbedding(unet).to(guidance.device)
        for module in (self.lora, self.camera_embedding):
            module.learning_rate = self.learning_rate  # type: ignore[assignment]
        guidance.eager()  # a CUDA graph would replay the adapter as it was when captured

    def trainable_modules(self) -> dict[str, nn.Module]:
        if self.lora is None or self.camera_embedding is None:
            raise RuntimeError("estimator=vsd is not bound to a guidance yet")
        return {"lora": self.lora, "camera_embedding": self.camera_embedding}

    @contextmanager
    def _adapted(self, guidance: ScoreDistillation, cameras: Tensor) -> Iterator[None]:
        """The UNet as the LoRA model: adapter on, the camera embedding seeing `cameras`."""
        with enabled(guidance.unet, self.lora), self.camera_embedding.seeing(cameras):  # type: ignore[attr-defined, arg-type, union-attr]
            yield

    def direction(self, guidance: ScoreDistillation, x0: Tensor, timesteps: Tensor, noise: Tensor, condition: Condition) -> Tensor:
        noisy = guidance.noisy_samples(x0, timesteps, noise)
        pretrained = guidance.guided_noise(noisy, timesteps, condition)
        with self._adapted(guidance, camera_condition(condition.cameras)):
            (adapted,) = guidance.noise_predictions(noisy, timesteps, condition, halves=("conditional",))
        return (pretrained - adapted).to(x0)

    def terms(self, guidance: ScoreDistillation, x0: Tensor, condition: Condition) -> dict[str, Tensor]:
        """`loss_lora`: the LoRA model's diffusion loss on the detached samples, at fresh
        timesteps and noise (drawn from the guidance's generator, so a resume replays them)."""
        n_train = guidance.alphas_cumprod.shape[0]
        batch = x0.shape[0]
        timesteps = torch.randint(max(1, round(self.lora_t_min * n_train)), n_train, (batch,), generator=guidance.generator)
        noise = torch.randn(x0.shape, generator=guidance.generator).to(x0)
        keep = (torch.rand(batch, generator=guidance.generator) >= self.camera_dropout).float().view(-1, 1)
        cameras = camera_condition(condition.cameras).cpu() * keep
        noisy = guidance.noisy_samples(x0, timesteps, noise)
        conditional, _ = guidance.conditioning(condition)
        conditioning = [part.to(guidance.device, guidance.dtype) for part in (conditional if isinstance(conditional, tuple) else (conditional,))]
        with torch.enable_grad(), self._adapted(guidance, cameras):
            prediction = guidance.model_output(noisy.to(guidance.dtype), timesteps.to(guidance.device), *conditioning).float()
        if guidance.scheduler.config.prediction_type == "v_prediction":
            alpha_bar = guidance.alphas_cumprod[timesteps].to(x0).view(-1, 1, 1, 1)
            target = alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0
        else:
            target = noise
        return {"loss_lora": F.mse_loss(prediction, target.to(prediction))}
