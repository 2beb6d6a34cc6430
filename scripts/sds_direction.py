"""How hard does score distillation pull renders of a wrong object towards the prompted one, per
noise level? (see `bundled.evaluation.sds_direction`)

    python scripts/sds_direction.py --prompt "a yellow cone" --source cylinder [--prior DIR]
        [--timesteps 0.2 0.4 0.6 0.8 0.95] [--guidance-scale 5] [--views 16] [--seed 0]
        [--estimator sds|ism|csd|nfsd|vsd]

Prints one line per timestep, then JSON {timestep: cosine}. A cosine near 0 means that band of
timesteps barely tells the source shape from the prompted one. `--estimator vsd` measures VSD at
its first step (an untrained LoRA: the direction is then (s - 1) times CSD's).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundled.evaluation.sds_direction import sds_direction  # noqa: E402
from bundled.prior.weights import BUNDLED_PRIOR_DIR  # noqa: E402
from bundled.world.objects import OBJECTS  # noqa: E402
from framework.guidance.estimators import ESTIMATORS, build_estimator  # noqa: E402
from framework.guidance.pixel import PixelDiffusionGuidance  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt", required=True, help='a bundled-world prompt, e.g. "a yellow cone"')
    parser.add_argument("--source", required=True, choices=tuple(OBJECTS), help="the wrong object whose renders are pushed")
    parser.add_argument("--prior", type=Path, default=BUNDLED_PRIOR_DIR, help="a pixel-space prior folder (bundled or DeepFloyd IF layout)")
    parser.add_argument("--text-attention-mask", action="store_true", help="mask the text padding, as DeepFloyd IF was trained (the bundled prior was not)")
    parser.add_argument("--timesteps", type=float, nargs="+", default=[0.2, 0.4, 0.6, 0.8, 0.95])
    parser.add_argument("--guidance-scale", type=float, default=5.0, help="as DreamGaussian's SDS uses")
    parser.add_argument("--views", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--estimator", choices=sorted(ESTIMATORS), default="sds", help="the score-distillation estimator whose step is measured")
    args = parser.parse_args(argv)
    if args.views < 1:
        parser.error(f"--views={args.views} must be positive")
    guidance = PixelDiffusionGuidance(
        str(args.prior), text_attention_mask=args.text_attention_mask, guidance_scale=args.guidance_scale, embedding_cache_dir=None, seed=args.seed
    )
    estimator = build_estimator(args.estimator)
    estimator.bind(guidance)
    try:
        cosines = sds_direction(guidance, args.prompt, args.source, args.timesteps, n_views=args.views, seed=args.seed, estimator=estimator)
    except ValueError as error:
        parser.error(str(error))
    for t, cosine in zip(args.timesteps, cosines):
        print(f"t = {t:.2f}: cosine {cosine:+.3f}")
    print(json.dumps({str(t): round(c, 4) for t, c in zip(args.timesteps, cosines)}))


if __name__ == "__main__":
    main()
