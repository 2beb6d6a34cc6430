"""Write the true object of a bundled-world prompt as seen from the evaluation views.

    python scripts/ground_truth.py --prompt "a red mug" --views 8 --out DIR [--resolution 64]

DIR receives view_XX.png (shaded renders on white), mask_XX.png (coverage), cameras.json (per
view: elevation, azimuth, distance, fovy, OpenGL c2w, resolution) and mesh.obj (+Y up, like
every export).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundled.evaluation.ground_truth import write_ground_truth  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt", required=True, help='e.g. "a red mug"')
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--resolution", type=int, default=64)
    args = parser.parse_args(argv)
    if args.views < 1 or args.resolution < 1:
        parser.error(f"--views={args.views} and --resolution={args.resolution} must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        write_ground_truth(args.prompt, args.views, args.out, args.resolution)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {args.views} views of {args.prompt!r} to {args.out}")


if __name__ == "__main__":
    main()
