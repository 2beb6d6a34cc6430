"""Score a novel-view prior on the held-out colour/object pairs of the bundled world.

    python scripts/evaluate_novel_view_prior.py [--prior bundled/novel_view_prior_weights] [--seed 0] [--out scores.json]

Prints the mean mask IoU of its samples against the true renders and the share with the right
colour (the targets: IoU >= 0.80, colour >= 0.95); see `bundled.evaluation.novel_view_prior`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundled.evaluation.novel_view_prior import score_novel_view_prior, summarise  # noqa: E402
from bundled.prior.novel_view_model import NOVEL_VIEW_PRIOR_DIR  # noqa: E402
from bundled.prior.view_pairs import HELD_OUT, SEEN  # noqa: E402
from framework.guidance.novel_view import NovelViewGuidance  # noqa: E402
from framework.utils.atomic import atomic_path  # noqa: E402
from framework.utils.images import image_grid, save_png  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", type=Path, default=NOVEL_VIEW_PRIOR_DIR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--random-inputs", type=int, default=1, help="input views per pair besides the front one")
    parser.add_argument("--steps", type=int, default=30, help="DDIM steps per sample")
    parser.add_argument("--guidance-scale", type=float, default=3.0)
    parser.add_argument("--pairs", choices=("held-out", "seen"), default="held-out", help="score the held-out colour/object pairs (the prior's score) or as many trained-on ones (to choose sampler settings on)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for every sample's scores")
    parser.add_argument("--grid", type=Path, default=None, help="PNG: per input view a row of the input, the 8 samples and the 8 true renders")
    args = parser.parse_args(argv)
    if args.random_inputs < 0 or args.steps < 1:
        parser.error(f"--random-inputs={args.random_inputs} must be >= 0 and --steps={args.steps} >= 1")
    if not (args.prior / "unet").is_dir():
        parser.error(f"--prior={args.prior}: no novel-view prior there (no unet/ folder)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    guidance = NovelViewGuidance(str(args.prior), device=args.device, embedding_cache_dir=None, cuda_graphs=False)
    rows: list = []
    pairs = HELD_OUT if args.pairs == "held-out" else SEEN
    scores = score_novel_view_prior(guidance, args.random_inputs, args.steps, args.guidance_scale, args.seed, pairs, rows=rows)
    if args.grid is not None:
        save_png(args.grid, image_grid(torch.stack(rows), padding=2))
    summary = summarise(scores)
    for score in scores:
        iou = sum(score.mask_iou) / len(score.mask_iou)
        right = sum(score.colour_right) / len(score.colour_right)
        print(f"{score.colour:>7} {score.object:<9} input ({score.input_elevation_deg:5.1f}, {score.input_azimuth_deg:6.1f}): IoU {iou:.3f}, colour {right:.2f}")
    print(f"mean mask IoU {summary['mask_iou']:.3f}, colour right {summary['colour_accuracy']:.3f} over {int(summary['samples'])} samples")
    if args.out is not None:
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps({"summary": summary, "samples": [asdict(s) for s in scores], "args": {k: str(v) for k, v in vars(args).items()}}, indent=2))


if __name__ == "__main__":
    main()
