"""Sample the bundled point-cloud prior (or any folder in its layout) for every caption of the
world and score the clouds against the true surfaces.

    python scripts/evaluate_point_cloud_prior.py [--prior DIR] [--samples-per-prompt 1] [--steps 64]
        [--guidance-scale 3] [--objects mug house ...] [--seed 0] [--out outputs/point_cloud_prior_eval]

Reports the mean Chamfer distance, the right-object share and the colour share, overall and per
caption (see `bundled.evaluation.point_cloud_prior` for how each is judged), in
OUT/point_cloud_prior_eval.json. The last printed line is the summary as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundled.evaluation.point_cloud_prior import evaluate_point_cloud_prior  # noqa: E402
from framework.guidance.point_cloud_sampling import sample_point_clouds  # noqa: E402
from bundled.prior.point_cloud_model import POINT_CLOUD_PRIOR_DIR  # noqa: E402
from framework.guidance.point_cloud_prior import load_point_cloud_prior  # noqa: E402
from bundled.world.objects import COLOURS, OBJECTS  # noqa: E402
from framework.utils.atomic import atomic_path  # noqa: E402
from framework.utils.devices import default_device  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", type=Path, default=POINT_CLOUD_PRIOR_DIR)
    parser.add_argument("--samples-per-prompt", type=int, default=1)
    parser.add_argument("--steps", type=int, default=64, help="DDIM steps")
    parser.add_argument("--guidance-scale", type=float, default=2.0, help="classifier-free guidance (1: none; the bundled prior samples best at 2)")
    parser.add_argument("--points", type=int, default=None, help="points per sampled cloud (default: the prior's n_ctx)")
    parser.add_argument("--reference-points", type=int, default=2048, help="points of each object's true surface cloud")
    parser.add_argument("--objects", nargs="+", choices=tuple(OBJECTS), default=tuple(OBJECTS), help="the right object is then judged among these only")
    parser.add_argument("--colours", nargs="+", choices=tuple(COLOURS), default=tuple(COLOURS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default=str(default_device()), help="where the prior samples")
    parser.add_argument("--out", type=Path, default=Path("outputs/point_cloud_prior_eval"))
    args = parser.parse_args(argv)
    for flag in ("samples_per_prompt", "steps", "reference_points", "batch_size"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')}={getattr(args, flag)} must be positive")
    if args.points is not None and args.points < 1:
        parser.error(f"--points={args.points} must be positive")
    for flag in ("objects", "colours"):
        names = getattr(args, flag)
        if len(set(names)) != len(names):
            parser.error(f"--{flag} {' '.join(names)} names one twice")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        prior = load_point_cloud_prior(args.prior, args.device)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    generator = torch.Generator().manual_seed(args.seed)

    def sample(prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return sample_point_clouds(prior, prompts, generator, args.steps, args.guidance_scale, args.points, args.batch_size)

    start = time.monotonic()
    result = evaluate_point_cloud_prior(sample, args.objects, args.colours, args.samples_per_prompt, args.reference_points, args.seed)
    seconds = time.monotonic() - start
    report = {
        **result,
        "prior": str(args.prior),
        "steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "seed": args.seed,
        "seconds": round(seconds, 1),
    }
    with atomic_path(args.out / "point_cloud_prior_eval.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{result['summary']['n_samples']} clouds in {seconds:.0f} s; wrote {args.out}")
    print(json.dumps(result["summary"]))


if __name__ == "__main__":
    main()
