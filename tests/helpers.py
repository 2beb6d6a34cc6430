"""Compose the real Hydra configs in-process, shrunk to test size."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import framework.launch  # noqa: F401  (registers the config resolvers)

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))


def compose_config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def tiny_run_settings() -> list[str]:
    """What every tiny end-to-end run sets: logging and checkpoints every step, 32 px evaluation
    renders, two validation views, a four-frame turntable, no progress bar."""
    return [
        "trainer.val_check_interval=2",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "logger=csv",
        "camera.eval_resolution=32",
        "camera.n_validation_views=2",
        "camera.n_turntable_frames=4",
        "callbacks.checkpoint.every_n_train_steps=1",
        "~callbacks.progress",
    ]


def tiny_overrides(run_dir: Path, prior: Path, max_steps: int = 4) -> list[str]:
    """A DreamFusion run small enough for a unit test (32 px, 16 samples per ray, 16^2 triplane)."""
    return [
        f"run_dir={run_dir}",
        f"guidance.pretrained={prior}",
        "guidance.embedding_cache_dir=null",
        f"trainer.max_steps={max_steps}",
        "trainer.val_check_interval=2",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "logger=csv",
        "camera.resolution=32",
        "camera.eval_resolution=32",
        "camera.n_validation_views=2",
        "camera.n_turntable_frames=8",
        "renderer.n_samples=16",
        "renderer.occupancy.resolution=16",
        "renderer.occupancy.update_every=2",
        "representation.encoding.resolution=16",
        "representation.encoding.channels=4",
        "callbacks.export.exporters.mesh.resolution=32",
        "callbacks.checkpoint.every_n_train_steps=2",
        "~callbacks.progress",
    ]


def tiny_gaussian_overrides(run_dir: Path, prior: Path, gaussian_steps: int = 4, texture_steps: int = 2) -> list[str]:
    """A DreamGaussian run small enough for a unit test: 256 Gaussians at 32 px, densifying from
    step 1 every 2 steps with a low growth threshold so the count really changes, a 32^3 mesh
    grid and a 64^2 texture."""
    return [
        f"run_dir={run_dir}",
        f"guidance.pretrained={prior}",
        "guidance.embedding_cache_dir=null",
        f"system.stages.gaussians.steps={gaussian_steps}",
        f"densification.refine_stop_iter={gaussian_steps}",
        f"system.stages.texture.steps={texture_steps}",
        "trainer.val_check_interval=2",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "logger=csv",
        "camera.batch_size=2",
        "camera.resolution=32",
        "camera.eval_resolution=32",
        "camera.n_validation_views=2",
        "camera.n_turntable_frames=8",
        "representation.n_init=256",
        "representation.init_opacity=0.5",
        "densification.refine_start_iter=1",
        "densification.refine_every=2",
        "densification.grow_grad2d=1e-7",
        "system.stages.texture.slots.main.estimator.n_steps=2",
        "system.stages.texture.convert.grid_resolution=32",
        "system.stages.texture.convert.density_threshold=0.05",
        "system.stages.texture.convert.target_faces=500",
        "system.stages.texture.convert.texture_size=64",
        "system.stages.texture.convert.bake_resolution=32",
        "system.stages.texture.convert.bake_views_per_ring=4",
        "callbacks.checkpoint.every_n_train_steps=1",
        "~callbacks.progress",
    ]


def tiny_magic3d_overrides(run_dir: Path, prior: Path, coarse_steps: int = 3, fine_steps: int = 3) -> list[str]:
    """A Magic3D run small enough for a unit test: the tiny NeRF of `tiny_overrides` at 32 px, then
    48 px on an 8^3 DMTet (per-vertex SDF, Magic3D's default) set from a 32^3 density grid. The
    threshold 1.0 takes the untrained blob's ball of radius 0.47 (at 5.0 it is 0.25, one grid
    cell); checkpoints after every step."""
    return [
        f"run_dir={run_dir}",
        f"guidance.pretrained={prior}",
        "guidance.embedding_cache_dir=null",
        f"system.stages.coarse.steps={coarse_steps}",
        f"system.stages.fine.steps={fine_steps}",
        "trainer.val_check_interval=2",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "logger=csv",
        f"camera.resolution=[[0,32],[{coarse_steps},48]]",
        "camera.eval_resolution=32",
        "camera.n_validation_views=2",
        "camera.n_turntable_frames=4",
        "renderer.n_samples=16",
        "renderer.occupancy.resolution=16",
        "renderer.occupancy.update_every=2",
        "representation.encoding.resolution=16",
        "representation.encoding.channels=4",
        "system.stages.fine.convert.density_threshold=1.0",
        "system.stages.fine.convert.grid_resolution=32",
        "system.stages.fine.convert.fit_steps=100",
        "system.stages.fine.convert.dmtet.resolution=8",
        "callbacks.export.exporters.coarse.resolution=32",
        "++callbacks.export.exporters.mesh.texture_size=64",
        "callbacks.checkpoint.every_n_train_steps=1",
        "~callbacks.progress",
    ]


def tiny_fantasia3d_overrides(run_dir: Path, prior: Path, geometry_steps: int = 3, appearance_steps: int = 2) -> list[str]:
    """A Fantasia3D run small enough for a unit test: an 8^3 DMTet (a 16^2 triplane, its sphere
    fitted in 100 steps) and a 16^2 material triplane at 32 px, 64^2 PBR maps; checkpoints after
    every step."""
    return [
        f"run_dir={run_dir}",
        f"guidance.pretrained={prior}",
        "guidance.embedding_cache_dir=null",
        f"system.stages.geometry.steps={geometry_steps}",
        f"system.stages.appearance.steps={appearance_steps}",
        "trainer.val_check_interval=2",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "logger=csv",
        "camera.resolution=32",
        "camera.eval_resolution=32",
        "camera.n_validation_views=2",
        "camera.n_turntable_frames=4",
        "representation.resolution=8",
        "representation.encoding.resolution=16",
        "representation.encoding.channels=4",
        "representation.init_fit_steps=100",
        "material.encoding.resolution=16",
        "material.encoding.channels=4",
        "++callbacks.export.exporters.mesh.texture_size=64",
        "callbacks.checkpoint.every_n_train_steps=1",
        "~callbacks.progress",
    ]


def tiny_richdreamer_overrides(run_dir: Path, text_prior: Path, multi_view_prior: Path, normal_depth_prior: Path, geometry_steps: int = 3, appearance_steps: int = 2) -> list[str]:
    """A RichDreamer run at Fantasia3D's tiny sizes (`tiny_fantasia3d_overrides`), its three
    slots on tiny priors: normal-depth (main), albedo (the tiny multi-view prior) and rgb."""
    return [
        *tiny_fantasia3d_overrides(run_dir, normal_depth_prior, geometry_steps, appearance_steps),
        f"guidance_slots.albedo.pretrained={multi_view_prior}",
        "guidance_slots.albedo.embedding_cache_dir=null",
        f"guidance_slots.rgb.pretrained={text_prior}",
        "guidance_slots.rgb.embedding_cache_dir=null",
    ]


def tiny_zero123_overrides(run_dir: Path, prior: Path, image: Path, max_steps: int = 4) -> list[str]:
    """A Zero-1-to-3 run at the sizes of `tiny_overrides`, from `image` seen at elevation 15, under
    the novel-view prior at `prior`; the reference view rendered at 32 px."""
    return [
        "experiment=zero123",
        f"image={image}",
        "image_elevation=15",
        "camera.reference_resolution=32",
        *tiny_overrides(run_dir, prior, max_steps),
    ]


def tiny_dreamgaussian_image_overrides(run_dir: Path, text_prior: Path, novel_view_prior: Path, image: Path, gaussian_steps: int = 4, texture_steps: int = 2) -> list[str]:
    """DreamGaussian's image mode at the sizes of `tiny_gaussian_overrides`; the reference view
    goes from 16 to 32 px at the texture stage, as the default goes from 64 to 128."""
    return [
        "experiment=dreamgaussian",
        f"image={image}",
        "image_elevation=15",
        f"camera.reference_resolution=[[0,16],[{gaussian_steps},32]]",
        f"image_to_3d.guidance.pretrained={novel_view_prior}",
        *tiny_gaussian_overrides(run_dir, text_prior, gaussian_steps, texture_steps),
    ]
