"""Sample the bundled prior (or any prior folder) for every prompt of its world and score it.

    python scripts/evaluate_prior.py [--prior DIR] [--samples-per-prompt 1] [--steps 50] [--objects mug house ...]
        [--guidance-scale 2] [--eta 0] [--timestep-spacing trailing] [--seed 0] [--out outputs/prior_eval]

Reports colour, shape, view and normal-map shape accuracy (see `bundled.evaluation.prior` for how
each is judged), writes OUT/samples.png (objects x colours), OUT/views.png (front and back samples
of the objects with a front), OUT/normal_maps.png (objects x colour words) and
OUT/prior_eval.json (with per-object accuracies). The last printed line is JSON with
color_accuracy, shape_accuracy, view_accuracy, normal_map_shape_accuracy and their counts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundled.evaluation.prior import evaluate_prior  # noqa: E402
from bundled.prior.sampling import GUIDANCE_BELOW_T, load_prior, sample_images  # noqa: E402
from bundled.prior.weights import BUNDLED_PRIOR_DIR  # noqa: E402
from bundled.world.objects import OBJECTS  # noqa: E402
from framework.utils.atomic import atomic_path  # noqa: E402
from framework.utils.devices import default_device  # noqa: E402
from framework.utils.images import image_grid, save_png  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", type=Path, default=BUNDLED_PRIOR_DIR)
    parser.add_argument("--samples-per-prompt", type=int, default=1)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument(
        "--guidance-scale",
        type=float,
        default=2.0,
        help="classifier-free guidance; above ~4 the bundled prior's samples swell into dark, grainy blobs",
    )
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM eta: 0 deterministic, 1 DDPM-like noise every step")
    parser.add_argument(
        "--timestep-spacing",
        choices=("leading", "trailing"),
        default="trailing",
        help="trailing starts sampling at the last training timestep (pure noise); leading one stride below",
    )
    parser.add_argument(
        "--guidance-below-t",
        type=int,
        default=GUIDANCE_BELOW_T,
        help="guide only the steps below this timestep (a guidance interval); above it, the conditional prediction alone (1000: every step)",
    )
    parser.add_argument(
        "--objects",
        nargs="+",
        choices=tuple(OBJECTS),
        default=tuple(OBJECTS),
        help="score only these objects (e.g. mug house snowman for more view samples in less time); shape is then judged among them only",
    )
    parser.add_argument(
        "--no-normal-maps", dest="normal_maps", action="store_false", help="skip the normal-map prompts ('a normal map of a red cube')"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default=str(default_device()), help="where the prior samples")
    parser.add_argument("--out", type=Path, default=Path("outputs/prior_eval"))
    args = parser.parse_args(argv)
    if len(set(args.objects)) != len(args.objects):
        parser.error(f"--objects {' '.join(args.objects)} names an object twice")
    if args.samples_per_prompt < 1 or args.steps < 1 or args.batch_size < 1:
        parser.error(
            f"--samples-per-prompt={args.samples_per_prompt}, --steps={args.steps} and "
            f"--batch-size={args.batch_size} must be positive"
        )
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        prior = load_prior(args.prior, args.device)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    generator = torch.Generator().manual_seed(args.seed)

    def sample(prompts: list[str]) -> torch.Tensor:
        return sample_images(
            prior,
            prompts,
            generator,
            args.steps,
            args.guidance_scale,
            batch_size=args.batch_size,
            eta=args.eta,
            timestep_spacing=args.timestep_spacing,
            guidance_below_t=args.guidance_below_t,
        )

    start = time.monotonic()
    evaluation = evaluate_prior(sample, objects=args.objects, samples_per_prompt=args.samples_per_prompt, with_normal_maps=args.normal_maps)
    seconds = time.monotonic() - start
    n_images = evaluation.summary["n_samples"] + evaluation.summary["n_view_samples"] + evaluation.summary["n_normal_map_samples"]

    save_png(args.out / "samples.png", image_grid(evaluation.grid, padding=2))
    if evaluation.view_grid is not None:
        save_png(args.out / "views.png", image_grid(evaluation.view_grid, padding=2))
    if evaluation.normal_map_grid is not None:
        save_png(args.out / "normal_maps.png", image_grid(evaluation.normal_map_grid, padding=2))
    report = {
        **evaluation.summary,
        "per_object": evaluation.per_object,
        "prior": str(args.prior),
        "steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "eta": args.eta,
        "timestep_spacing": args.timestep_spacing,
        "seed": args.seed,
        "objects": list(args.objects),
        "seconds": round(seconds, 1),
        "seconds_per_sample": round(seconds / n_images, 3),
    }
    with atomic_path(args.out / "prior_eval.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    for name, scores in evaluation.per_object.items():
        print(f"{name:>10}: " + ", ".join(f"{k} {'n/a' if v is None else f'{v:.2f}'}" for k, v in scores.items()))
    print(f"{n_images} samples in {seconds:.0f} s; wrote {args.out}")
    print(json.dumps(evaluation.summary))


if __name__ == "__main__":
    main()
