"""Score a multi-view prior's 4-view sets against the bundled world.

    python scripts/evaluate_multi_view_prior.py [--prior bundled/multi_view_prior_weights] [--sets-per-prompt 1] [--seed 0] [--out DIR]
    python scripts/evaluate_multi_view_prior.py --domain normal_depth   (RichDreamer's priors; or --domain albedo)

Prints the share of view sets whose every view is right in colour, in shape and (objects with a
front, views near the front or back) in view, the targets being 0.85 each, and writes
DIR/summary.json and DIR/view_sets.png (one row per prompt, its first set); see
`bundled.evaluation.multi_view_prior`. A normal-depth prior is scored on shape (its normal maps)
and on whether its depth maps draw the same object, target shape >= 0.9; an albedo prior on
colour and shape against unlit references, targets shape >= 0.9 and colour >= 0.95. Its
view_sets.png shows the normal maps above the depth maps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundled.evaluation.multi_view_prior import evaluate_multi_view_prior  # noqa: E402
from bundled.prior.dataset import domain_channels  # noqa: E402
from bundled.prior.multi_view_model import DOMAIN_PRIOR_DIRS, NUM_VIEWS  # noqa: E402
from bundled.prior.sampling import load_prior  # noqa: E402
from bundled.world.objects import COLOURS, OBJECTS  # noqa: E402
from framework.utils.atomic import atomic_path  # noqa: E402
from framework.utils.devices import default_device  # noqa: E402
from framework.utils.images import image_grid, save_png  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", choices=tuple(DOMAIN_PRIOR_DIRS), default="colour", help="what the prior draws (RichDreamer's priors: normal_depth, albedo)")
    parser.add_argument("--prior", type=Path, default=None, help="default: the domain's bundled folder")
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
    if args.prior is None:
        args.prior = DOMAIN_PRIOR_DIRS[args.domain]
    if not (args.prior / "unet").is_dir():
        parser.error(f"--prior={args.prior}: no multi-view prior there (no unet/ folder)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    prior = load_prior(args.prior, args.device)
    channels = prior.unet.config.out_channels
    if channels != domain_channels(args.domain):
        print(f"error: --prior={args.prior} draws {channels}-channel images, not the {args.domain} domain's", file=sys.stderr)
        sys.exit(2)
    result = evaluate_multi_view_prior(prior, args.objects, tuple(COLOURS), args.sets_per_prompt, args.seed, args.steps, args.guidance_scale, args.view_dependent_prompts, args.domain)
    summary = {**result["summary"], "seed": args.seed, "prior": str(args.prior), "view_dependent_prompts": args.view_dependent_prompts}
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    first = result["images"].view(-1, args.sets_per_prompt, NUM_VIEWS, *result["images"].shape[1:])[:, 0]
    if args.domain == "normal_depth":  # each set's normal maps, then its depth maps in grey
        first = torch.stack([first[..., :3], first[..., 3:].expand(*first.shape[:-1], 3)], dim=1).flatten(0, 1)
    save_png(args.out / "view_sets.png", image_grid(first, padding=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
