"""Score a multi-view prior's 4-view sets against the bundled world.

    python scripts/evaluate_multi_view_prior.py [--prior bundled/multi_view_prior_weights] [--sets-per-prompt 1] [--seed 0] [--out DIR]

Prints the share of view sets whose every view is right in colour, in shape and (objects with a
front, views near the front or back) in view, the targets being 0.85 each, and writes
DIR/summary.json and DIR/view_sets.png (one row per prompt, its first set); see
`bundled.evaluation.multi_view_prior`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundled.evaluation.multi_view_prior import evaluate_multi_view_prior  # noqa: E402
from bundled.prior.multi_view_model import MULTI_VIEW_PRIOR_DIR, NUM_VIEWS  # noqa: E402
from bundled.prior.sampling import load_prior  # noqa: E402
from bundled.world.objects import COLOURS, OBJECTS  # noqa: E402
from framework.utils.atomic import atomic_path  # noqa: E402
from framework.utils.devices import default_device  # noqa: E402
from framework.utils.images import image_grid, save_png  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", type=Path, default=MULTI_VIEW_PRIOR_DIR)
    parser.add_argument("--sets-per-prompt", type=int, default=1)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance-scale", type=float, default=2.0)
    parser.add_argument("--objects", nargs="+", choices=tuple(OBJECTS), default=tuple(OBJECTS))
    parser.add_argument("--view-dependent-prompts", action="store_true", help="name each view's side in its caption (guidance.view_dependent=true)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=str(default_device()))
    parser.add_argument("--out", type=Path, default=Path("outputs/multi_view_prior_eval"))
    args = parser.parse_args(argv)
    if args.sets_per_prompt < 1 or args.steps < 1:
        parser.error(f"--sets-per-prompt={args.sets_per_prompt} and --steps={args.steps} must be positive")
    if not (args.prior / "unet").is_dir():
        parser.error(f"--prior={args.prior}: no multi-view prior there (no unet/ folder)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    prior = load_prior(args.prior, args.device)
    result = evaluate_multi_view_prior(prior, args.objects, tuple(COLOURS), args.sets_per_prompt, args.seed, args.steps, args.guidance_scale, args.view_dependent_prompts)
    summary = {**result["summary"], "seed": args.seed, "prior": str(args.prior), "view_dependent_prompts": args.view_dependent_prompts}
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    first = result["images"].view(-1, args.sets_per_prompt, NUM_VIEWS, *result["images"].shape[1:])[:, 0]
    save_png(args.out / "view_sets.png", image_grid(first, padding=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
