"""Speed and memory of the building blocks, side by side in one run (machines are noisy: compare
ratios within a table, not across runs).

    python scripts/benchmark.py [--repeats 5] [--device cpu|cuda] [--only encodings,...,dmtet_methods,prolificdreamer] [--stable-diffusion DIR]

Prints a table: median seconds over `--repeats` runs (after one warm-up), derived throughput, and
peak memory (CUDA: per benchmark; CPU: the process's peak resident size so far).
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from framework.cameras.batch import Batch  # noqa: E402
from framework.cameras.camera import CameraBatch  # noqa: E402
from framework.cameras.distribution import OrbitDistribution  # noqa: E402
from framework.renderers.occupancy import OccupancyGrid  # noqa: E402
from framework.renderers.volume import VolumeRenderer  # noqa: E402
from framework.representations.background import SolidBackground  # noqa: E402
from framework.representations.encodings import HashGridEncoding, TriplaneEncoding, reference_hash_grid_encode  # noqa: E402
from framework.representations.materials import ShadingAugmentation  # noqa: E402
from framework.representations.nerf import NeRFField  # noqa: E402
from framework.utils.devices import default_device  # noqa: E402

Row = tuple[str, float, str, float]


def measure(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, float]:
    """(median seconds, peak memory in MB) of `fn`."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return statistics.median(times), peak


def encodings(repeats: int, device: torch.device) -> list[Row]:
    n = 1 << 16
    points = (torch.rand(n, 3, device=device) * 2 - 1).requires_grad_(True)
    grid = HashGridEncoding(log2_hashmap_size=19, backend="torch").to(device)
    triplane = TriplaneEncoding(resolution=128, channels=16).to(device)
    levels = dict(
        n_levels=grid.n_levels,
        n_features_per_level=grid.n_features_per_level,
        log2_hashmap_size=grid.log2_hashmap_size,
        base_resolution=grid.base_resolution,
        per_level_scale=grid.per_level_scale,
    )
    cases = {
        "hash grid (torch, vectorised)": lambda: grid(points).sum().backward(),
        "hash grid (simple reference)": lambda: reference_hash_grid_encode(points, grid.params, **levels).sum().backward(),
        "triplane 128^2 x 16": lambda: triplane(points).sum().backward(),
    }
    rows = []
    for name, fn in cases.items():
        seconds, peak = measure(fn, repeats, device)
        rows.append((f"encoding fwd+bwd: {name}", seconds, f"{n / seconds / 1e6:.3f} M pts/s", peak))
    return rows


def nerf(repeats: int, device: torch.device) -> list[Row]:
    torch.manual_seed(0)
    field = NeRFField(TriplaneEncoding(resolution=64, channels=16)).to(device)
    occupancy = OccupancyGrid(resolution=32).to(device)
    occupancy.update(field.density, 0)
    renderer = VolumeRenderer(n_samples=64, occupancy=occupancy)
    material, background = ShadingAugmentation(), SolidBackground().to(device)
    rows = []
    for size in (32, 64, 128):
        cameras = OrbitDistribution().sample(1, size, torch.Generator().manual_seed(0)).to(device)

        def step() -> None:
            shading = material.sample_shading(cameras, True)
            renderer(field, material, background, cameras, shading, True)["rgb"].mean().backward()

        seconds, peak = measure(step, repeats, device)
        rows.append((f"NeRF render+backward {size}px (64 samples/ray)", seconds, f"{1 / seconds:.2f} it/s", peak))
    return rows


def guidance(repeats: int, device: torch.device) -> list[Row]:
    """One score-distillation step (forward and backward to the renders) per estimator, on the
    bundled prior; VSD's includes its LoRA's own loss and backward."""
    from bundled.prior.weights import BUNDLED_PRIOR_DIR
    from framework.guidance.condition import Condition
    from framework.guidance.estimators import ESTIMATORS, build_estimator
    from framework.guidance.pixel import PixelDiffusionGuidance

    cameras = OrbitDistribution().sample(1, 64, torch.Generator().manual_seed(0)).to(device)
    condition = Condition(cameras, text="a red cube")
    rgb = torch.rand(1, 64, 64, 3, device=device, requires_grad=True)
    rows: list[Row] = []
    sds_seconds = None
    for name in ESTIMATORS:
        prior = PixelDiffusionGuidance(str(BUNDLED_PRIOR_DIR), embedding_cache_dir=None, device=device.type)
        estimator = build_estimator(name)
        estimator.bind(prior)

        def step() -> None:
            terms = prior(rgb, condition, 500, estimator)
            sum(value for key, value in terms.items() if key.startswith("loss_")).backward()

        seconds, peak = measure(step, repeats, device)
        sds_seconds = sds_seconds or seconds
        rows.append((f"{name.upper()} step, bundled prior (CFG, 64px, t <= 0.98)", seconds, f"{1 / seconds:.2f} it/s ({seconds / sds_seconds:.2f}x SDS)", peak))
    return rows


def build_experiment(experiment: str, device: torch.device, backend: str = "auto", overrides: tuple[str, ...] = ()) -> tuple[Any, Any, Any]:
    """(config, system, datamodule) of the README's run of `experiment`: the real configs,
    composed and built as launch does."""
    from hydra import compose, initialize_config_dir

    from framework.launch import build_system

    common = [f"experiment={experiment}", f"backend={backend}", "prompt=a red cube", "run_dir=/tmp/sds3d-benchmark", "guidance.embedding_cache_dir=null"]
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*common, *overrides])
    system, datamodule = build_system(cfg, device)
    return cfg, system.to(device), datamodule


def demo(repeats: int, device: torch.device) -> list[Row]:
    """Steps/s of the README's DreamFusion run: the real configs, composed and built as launch does."""
    cfg, system, datamodule = build_experiment("dreamfusion", device)
    group = system.configure_optimizers()
    step_index = iter(range(10**9))

    def step() -> None:
        index = next(step_index)
        batch = Batch(datamodule.training_batch(index)).to(device)
        system.set_learning_rates(group, index)
        system.renderers[system.stage.renderer].update(system.representation, index)
        loss = system.compute_losses(system.render(batch.cameras, training=True), batch, index)["loss"]
        group.zero_grad()
        loss.backward()
        group.step()

    seconds, peak = measure(step, repeats, device)
    steps = cfg.trainer.max_steps
    return [(f"DreamFusion demo step ({steps} steps: ~{steps * seconds / 60:.1f} min)", seconds, f"{1 / seconds:.2f} it/s", peak)]


def splatting(repeats: int, device: torch.device) -> list[Row]:
    """Gaussian splatting forward+backward: our torch tile rasterizer against the dense reference
    (every pixel x every Gaussian) and, on CUDA, gsplat. An object of 4096 Gaussians (DreamGaussian's
    initial scale) filling about half the width of a 128 px view. Throughput shows the speed-up
    over the dense reference."""
    from framework.renderers.splatting import rasterize_gaussians
    from tests.splatting_reference import render_reference

    generator = torch.Generator().manual_seed(0)
    n, size = 4096, 128
    directions = torch.nn.functional.normalize(torch.randn(n, 3, generator=generator), dim=-1)
    gaussians = [
        directions * 0.5 * torch.rand(n, 1, generator=generator) ** (1 / 3),
        torch.randn(n, 4, generator=generator),
        torch.exp(torch.randn(n, 3, generator=generator) * 0.3 + math.log(0.03)),
        torch.rand(n, generator=generator) * 0.8 + 0.1,
        torch.rand(n, 3, generator=generator),
    ]
    gaussians = [tensor.to(device).requires_grad_() for tensor in gaussians]
    cameras = CameraBatch.from_orbit(torch.tensor([15.0]), torch.tensor([30.0]), torch.tensor([2.5]), torch.tensor([49.0]), size).to(device)
    view = (cameras.world_to_camera_opencv(), cameras.intrinsics(), size, size)

    def step(render: Callable[..., tuple]) -> Callable[[], None]:
        def run() -> None:
            image, alpha = render(*gaussians, *view)[:2]
            (image.sum() + alpha.sum()).backward()

        return run

    dense_repeats = 1 if device.type == "cpu" else repeats  # 5-10 s a run on a CPU core
    cases = [("torch tiles", step(lambda *args: rasterize_gaussians(*args, backend="torch")), repeats)]
    cases.append((f"dense reference (median of {dense_repeats})", step(render_reference), dense_repeats))
    if device.type == "cuda":
        cases.append(("gsplat CUDA", step(lambda *args: rasterize_gaussians(*args, backend="cuda")), repeats))
    timings = [(name, *measure(fn, count, device)) for name, fn, count in cases]
    dense_seconds = timings[1][1]
    return [
        (f"splat fwd+bwd {n} GS {size}px: {name}", seconds, f"{1 / seconds:.2f} it/s ({dense_seconds / seconds:.0f}x)", peak)
        for name, seconds, peak in timings
    ]


def dreamgaussian(repeats: int, device: torch.device) -> list[Row]:
    """Seconds per step of the README's DreamGaussian run in each stage (the real configs): stage 1
    renders the Gaussians and backpropagates SDS (densification excluded: it runs every 50 steps),
    stage 2 renders the textured mesh of those Gaussians and fits it to the prior's refinement.
    On CUDA the same run is timed twice, side by side: with the CUDA kernels (gsplat, nvdiffrast)
    and with the pure-torch rasterizers on the same GPU."""
    backends = ("cuda", "torch") if device.type == "cuda" else ("torch",)
    return [row for backend in backends for row in _dreamgaussian_steps(repeats, device, backend)]


def _dreamgaussian_steps(repeats: int, device: torch.device, backend: str) -> list[Row]:
    cfg, system, datamodule = build_experiment("dreamgaussian", device, backend)
    step_index = iter(range(10**9))

    def stage_step() -> Callable[[], None]:
        group = system.configure_optimizers()

        def run() -> None:
            index = next(step_index)
            batch = Batch(datamodule.training_batch(index)).to(device)
            system.set_learning_rates(group, index)
            loss = system.compute_losses(system.render(batch.cameras, training=True), batch, index)["loss"]
            group.zero_grad()
            loss.backward()
            group.step()

        return run

    gaussian_seconds, gaussian_peak = measure(stage_step(), repeats, device)
    system.enter_stage(1)  # the conversion: Gaussians -> textured mesh
    texture_seconds, texture_peak = measure(stage_step(), repeats, device)
    n1, n2 = cfg.system.stages.gaussians.steps, cfg.system.stages.texture.steps
    return [
        (f"DreamGaussian [{backend}] stage 1 step ({cfg.representation.n_init} GS, batch {cfg.camera.batch_size})", gaussian_seconds, f"{1 / gaussian_seconds:.2f} it/s", gaussian_peak),
        (f"DreamGaussian [{backend}] stage 2 step ({n2} steps; both: ~{(n1 * gaussian_seconds + n2 * texture_seconds) / 60:.1f} min)", texture_seconds, f"{1 / texture_seconds:.2f} it/s", texture_peak),
    ]


def dmtet(repeats: int, device: torch.device) -> list[Row]:
    """A DMTet step without the prior, at grid 32 and 64 and 64 and 128 px (batch 1, the CPU
    defaults: triplane field, torch rasterizer): marching tetrahedra alone, then the whole
    render (field, marching tetrahedra, rasterisation, shading, antialiasing) with its backward.
    The surface is the fitted sphere of the default ellipsoid init."""
    from framework.renderers.dmtet import DMTetRenderer
    from framework.representations.dmtet import DMTet
    from framework.representations.materials import LitMaterial

    rows: list[Row] = []
    material, background = LitMaterial(), SolidBackground()
    for grid in (32, 64):
        dmtet = DMTet(grid, encoding=TriplaneEncoding(64, 8), hidden=32).to(device)
        renderer = DMTetRenderer("auto")

        def marching() -> None:
            with torch.no_grad():
                dmtet.surface()

        seconds, peak = measure(marching, repeats, device)
        n_faces = dmtet.surface()[1].shape[0]
        rows.append((f"DMTet grid {grid}: field + marching tets ({n_faces} faces)", seconds, f"{1 / seconds:.1f} it/s", peak))
        for size in (64, 128):
            cameras = CameraBatch.from_orbit(torch.tensor([15.0]), torch.tensor([30.0]), torch.tensor([2.5]), torch.tensor([40.0]), size).to(device)
            shading = material.sample_shading(cameras, training=True)

            def step() -> None:
                out = renderer(dmtet, material, background, cameras, shading, training=True)
                (out["rgb"].mean() + out["normal_map"].mean()).backward()

            seconds, peak = measure(step, repeats, device)
            rows.append((f"DMTet grid {grid} {size}px: render + backward", seconds, f"{1 / seconds:.1f} it/s", peak))
    return rows


def stage_steps(experiment: str, repeats: int, device: torch.device, overrides: tuple[str, ...] = ()) -> list[Row]:
    """Seconds per training step in every stage of `experiment` (the real configs; each stage's
    conversion runs first, untimed; densification excluded), and the run's optimisation time."""
    cfg, system, datamodule = build_experiment(experiment, device, overrides=overrides)
    step_index = iter(range(10**9))
    rows: list[Row] = []
    total = 0.0
    for index, stage in enumerate(system.stages):
        if stage.steps == 0:
            continue
        system.enter_stage(index)
        group = system.configure_optimizers()

        def step() -> None:
            at = next(step_index)
            batch = Batch(datamodule.training_batch(at)).to(device)
            system.set_learning_rates(group, at)
            system.renderers[system.stage.renderer].update(system.representation, at)
            loss = system.compute_losses(system.render(batch.cameras, training=True), batch, at)["loss"]
            group.zero_grad()
            loss.backward()
            group.step()

        seconds, peak = measure(step, repeats, device)
        total += stage.steps * seconds
        rows.append((f"{experiment} {stage.name} step ({stage.steps} steps)", seconds, f"{1 / seconds:.2f} it/s", peak))
    rows.append((f"{experiment}: all stages' steps (excl. conversions, exports)", total, f"~{total / 60:.1f} min", float("nan")))
    return rows


def dmtet_methods(repeats: int, device: torch.device, stable_diffusion: str | None = None) -> list[Row]:
    """Magic3D's and Fantasia3D's steps per stage with the default prior, or with a Stable
    Diffusion folder (`--stable-diffusion DIR`: 512 px renders for the mesh stages, the prior's
    latent fact)."""
    overrides: tuple[str, ...] = () if stable_diffusion is None else ("guidance=stable_diffusion", f"guidance.pretrained={stable_diffusion}")
    return [row for experiment in ("magic3d", "fantasia3d") for row in stage_steps(experiment, repeats, device, overrides)]


def prolificdreamer(repeats: int, device: torch.device) -> list[Row]:
    """ProlificDreamer's steps per stage (VSD, SDS, VSD) with the default prior."""
    return stage_steps("prolificdreamer", repeats, device)


BENCHMARKS = {
    "encodings": encodings,
    "nerf": nerf,
    "guidance": guidance,
    "demo": demo,
    "splatting": splatting,
    "dreamgaussian": dreamgaussian,
    "dmtet": dmtet,
    "dmtet_methods": dmtet_methods,
    "prolificdreamer": prolificdreamer,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=str(default_device()))
    parser.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {list(BENCHMARKS)}")
    parser.add_argument(
        "--stable-diffusion",
        default=None,
        help="a Stable Diffusion folder (e.g. one made by make_sd21.py with random weights): dmtet_methods times the methods with it at 512 px",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        parser.error(f"--only names unknown benchmarks {sorted(unknown)}; choose from {list(BENCHMARKS)}")
    print(f"device: {device}, torch threads: {torch.get_num_threads()}, repeats: {args.repeats} (median)")
    print(f"| {'benchmark':<58} | {'median s':>9} | {'throughput':>18} | {'peak MB':>8} |")
    print(f"|{'-' * 60}|{'-' * 11}|{'-' * 20}|{'-' * 10}|")
    for name in chosen:
        extra = {"stable_diffusion": args.stable_diffusion} if name == "dmtet_methods" else {}
        for label, seconds, throughput, peak in BENCHMARKS[name](args.repeats, device, **extra):
            print(f"| {label:<58} | {seconds:>9.4f} | {throughput:>18} | {peak:>8.0f} |", flush=True)


if __name__ == "__main__":
    main()
