"""The camera sampler as a LightningDataModule: random orbit batches for training, fixed orbits
for validation grids and the test turntable, each a `Batch` that carries the reference view of
image-to-3D (`image=`) when there is one."""

from __future__ import annotations

from typing import Iterator

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset

from framework.cameras.batch import Batch, ReferenceView
from framework.cameras.camera import CameraBatch
from framework.cameras.distribution import OrbitDistribution, orbit_ring
from framework.schedules import Scalar, Schedule, as_scalar, value_at


class _RandomOrbitBatches(IterableDataset):
    """Batch i is drawn from a generator seeded with (seed, i).

    Why not one running generator: Lightning prefetches a batch ahead of the step, so a running
    generator's state at checkpoint time would be one batch off. Seeding per index makes batch i
    the same whether the run was resumed or not, with nothing to checkpoint but the step.
    """

    def __init__(self, module: "OrbitCameraDataModule", start_index: int, rank: int, world_size: int) -> None:
        self.module = module
        self.start_index = start_index
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[Batch]:
        index = self.start_index
        while True:
            yield Batch(self.module.training_batch(index, self.rank, self.world_size), self.module.reference_at(index))
            index += 1


def _values(value: Scalar) -> list[int]:
    """Every value a stepwise number takes."""
    return sorted({int(v) for _, v in value.points}) if isinstance(value, Schedule) else [int(value)]


def _stepwise(value: object) -> Scalar:
    """Batch size and resolution change in steps: [[step, value], ...] holds each value until the
    next step (a Schedule object keeps its own interpolation)."""
    if isinstance(value, (int, float, Schedule)):
        return value
    return Schedule(as_scalar(value).points, interpolation="step")  # type: ignore[union-attr]


class OrbitCameraDataModule(pl.LightningDataModule):
    """Args (besides the orbit distribution and the evaluation rings):
    batch_size, resolution: of the training cameras (numbers or [[step, value], ...]).
    image: the reference image of image-to-3D (RGBA, or RGB on white), or None.
    reference_elevation_deg, reference_azimuth_deg, reference_distance, reference_fovy_deg,
        reference_resolution: the camera the reference image is taken to be seen from. The
            resolution may change in steps ([[step, value], ...]), like the training views': a
            texture stage at 128 px needs the reference at 128 px to reach every texel.
        reference_framing, reference_fill: how the image is framed for that camera (`auto`,
            `fit` or `keep`; see `framework.cameras.reference_image`).
        views_per_group: with more than 1, every batch_size entry is a group of this many cameras
            90 (360 / views) degrees apart at one elevation (a multi-view prior's view set).
    """

    def __init__(
        self,
        distribution: OrbitDistribution,
        batch_size: Scalar = 1,
        resolution: Scalar = 64,
        seed: int = 0,
        eval_elevation_deg: float = 20.0,
        eval_distance: float = 2.8,
        eval_fovy_deg: float = 42.0,
        eval_resolution: int = 64,
        n_validation_views: int = 4,
        n_turntable_frames: int = 60,
        image: str | None = None,
        reference_elevation_deg: float = 0.0,
        reference_azimuth_deg: float = 0.0,
        reference_distance: float = 2.8,
        reference_fovy_deg: float = 42.0,
        reference_resolution: Scalar = 64,
        reference_framing: str = "auto",
        reference_fill: float = 0.6,
        views_per_group: int = 1,
    ) -> None:
        super().__init__()
        self.distribution = distribution
        self.batch_size = _stepwise(batch_size)
        self.resolution = _stepwise(resolution)
        self.seed = seed
        self.eval_elevation_deg = eval_elevation_deg
        self.eval_distance = eval_distance
        self.eval_fovy_deg = eval_fovy_deg
        self.eval_resolution = eval_resolution
        self.n_validation_views = n_validation_views
        self.n_turntable_frames = n_turntable_frames
        if views_per_group < 1:
            raise ValueError(f"views_per_group={views_per_group} must be at least 1")
        self.views_per_group = views_per_group
        self.reference_resolution = _stepwise(reference_resolution)
        self._references: dict[int, ReferenceView] = {}
        if image is not None:
            resolutions = _values(self.reference_resolution)
            camera = CameraBatch.from_orbit(
                torch.tensor([float(reference_elevation_deg)]),
                torch.tensor([float(reference_azimuth_deg)]),
                torch.tensor([float(reference_distance)]),
                torch.tensor([float(reference_fovy_deg)]),
                resolutions[0],
            )
            for resolution in resolutions:
                if resolution < 8:
                    raise ValueError(f"camera.reference_resolution={resolution}: need >= 8")
                sized = camera.with_resolution(resolution)
                self._references[resolution] = ReferenceView.from_file(image, sized, reference_framing, reference_fill, log_notes=not self._references)

    def reference_at(self, index: int) -> ReferenceView | None:
        """The reference view of training step `index` (None without an image)."""
        if not self._references:
            return None
        return self._references[int(value_at(self.reference_resolution, index))]

    @property
    def reference(self) -> ReferenceView | None:
        """The reference view at its largest resolution, for validation, the turntable and feed-forward methods."""
        return self._references[max(self._references)] if self._references else None

    def training_batch(self, index: int, rank: int = 0, world_size: int = 1) -> CameraBatch:
        """The cameras of training step `index` on process `rank` of `world_size` (deterministic in
        seed, index and rank: under DDP every rank renders its own cameras)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index * world_size + rank)
        batch_size = int(value_at(self.batch_size, index))
        resolution = int(value_at(self.resolution, index))
        if batch_size < 1 or resolution < 8:
            raise ValueError(f"batch_size={batch_size} and resolution={resolution} at step {index}: need >= 1 and >= 8")
        if self.views_per_group > 1:
            return self.distribution.sample_groups(batch_size, self.views_per_group, resolution, generator)
        return self.distribution.sample(batch_size, resolution, generator)

    def _ring(self, n_views: int) -> CameraBatch:
        return orbit_ring(n_views, self.eval_elevation_deg, self.eval_distance, self.eval_fovy_deg, self.eval_resolution)

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        start, rank, world_size = (trainer.global_step, trainer.global_rank, trainer.world_size) if trainer is not None else (0, 0, 1)
        return DataLoader(_RandomOrbitBatches(self, start, rank, world_size), batch_size=None, collate_fn=_identity)

    def val_dataloader(self) -> DataLoader:
        return DataLoader([Batch(self._ring(self.n_validation_views), self.reference)], batch_size=None, collate_fn=_identity)

    def test_dataloader(self) -> DataLoader:
        ring = self._ring(self.n_turntable_frames)
        chunks = [Batch(ring.subset(slice(i, i + 8)), self.reference) for i in range(0, self.n_turntable_frames, 8)]
        return DataLoader(chunks, batch_size=None, collate_fn=_identity)

    def predict_dataloader(self) -> DataLoader:
        """Feed-forward methods: one batch holding the reference view."""
        if self.reference is None:
            raise ValueError("a feed-forward method reconstructs from an image: pass image=<file>")
        return DataLoader([Batch(self.reference.cameras, self.reference)], batch_size=None, collate_fn=_identity)


def _identity(batch: Batch) -> Batch:
    return batch
