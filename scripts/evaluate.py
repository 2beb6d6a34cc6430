"""Score a finished run's asset against the true object of its prompt.

    python scripts/evaluate.py RUN_DIR [--views 8] [--resolution 64]

Reads the prompt from RUN_DIR/.hydra/config.yaml, renders RUN_DIR/export/model.glb and the true
object from the evaluation views, writes RUN_DIR/eval.json (per-view mask IoU and colour error,
`mask_iou_mean`, `color_error_mean`, `dominant_colour`, `colour_right`; for a mug, house or
snowman `view_accuracy`, the Janus measure) and prints the summary as JSON on its last line. An
image-to-3D run is scored against the object its prompt= names (given beside image=).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundled.evaluation.run import ASSET, eval_name, evaluate_run  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--asset", type=Path, default=Path(ASSET), help="the GLB or OBJ to score, relative to RUN_DIR (Magic3D's coarse NeRF: export/coarse/model.glb)")
    args = parser.parse_args(argv)
    if args.views < 1 or args.resolution < 1:
        parser.error(f"--views={args.views} and --resolution={args.resolution} must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        result = evaluate_run(args.run_dir, args.views, args.resolution, args.asset)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    for view in result["views"]:
        error = "n/a" if view["color_error"] is None else f"{view['color_error']:.3f}"
        pose = f"elevation {view['elevation']:5.1f} azimuth {view['azimuth']:6.1f}"
        print(f"{pose}: mask IoU {view['mask_iou']:.3f}, colour error {error}")
    print(f"wrote {args.run_dir / eval_name(args.asset)}")
    keys = ("prompt", "asset", "mask_iou_mean", "color_error_mean", "dominant_colour", "colour_right", "watertight", "pbr_maps", "view_accuracy", "n_views")
    summary = {key: result[key] for key in keys}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
