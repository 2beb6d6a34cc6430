"""Train the front/back judge that `scripts/evaluate_prior.py` scores view accuracy with.

    python scripts/train_view_classifier.py [--steps 1200] [--members 3] [--seed 0] [--out PATH]

Renders the reference views of every object with a front in every colour, trains the ensemble on
them (see `bundled.evaluation.view_classifier`) and writes it (by default over the shipped
weights). Then it scores ground-truth renders from random cameras of the SDS distribution in the
front and back sectors, views it never saw: the view accuracy a perfect prior would reach. The last
printed line is JSON with that accuracy, overall and per object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundled.evaluation.prior import VIEW_HALF_WIDTH_DEG, PriorPrompt, build_references, score_views, train_view_classifier  # noqa: E402
from bundled.evaluation.view_classifier import SHIPPED_CLASSIFIER, TRAIN_STEPS, FrontBackClassifier  # noqa: E402
from bundled.world.objects import COLOURS, OBJECTS  # noqa: E402
from bundled.world.render import render_object  # noqa: E402
from framework.cameras.distribution import OrbitDistribution  # noqa: E402

CEILING_VIEWS_PER_COLOUR = 8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=TRAIN_STEPS)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=SHIPPED_CLASSIFIER)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.members < 1:
        parser.error(f"--steps={args.steps} and --members={args.members} must be positive")
    return args


def ceiling(classifier: FrontBackClassifier, seed: int) -> dict[str, float]:
    """Accuracy on true renders from random SDS cameras in the front and back sectors, per object."""
    generator = torch.Generator().manual_seed(seed)
    distribution = OrbitDistribution()
    scores = {}
    for name in classifier.objects:
        correct = []
        for colour in COLOURS:
            cameras = distribution.sample(8 * CEILING_VIEWS_PER_COLOUR, 32, generator)
            azimuth = cameras.azimuth_deg.abs()
            rows = ((azimuth <= VIEW_HALF_WIDTH_DEG) | (azimuth >= 180.0 - VIEW_HALF_WIDTH_DEG)).nonzero(as_tuple=True)[0]
            rows = rows[:CEILING_VIEWS_PER_COLOUR]
            images, _ = render_object(OBJECTS[name], colour, cameras.subset(rows))
            prompts = [PriorPrompt(colour, name, "front" if a <= VIEW_HALF_WIDTH_DEG else "back") for a in azimuth[rows].tolist()]
            correct.append(score_views(images, prompts, classifier))
        scores[name] = float(torch.cat(correct).float().mean())
    return scores


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.monotonic()
    objects = [name for name, obj in OBJECTS.items() if obj.has_front]
    references = build_references(objects, tuple(COLOURS))
    classifier = train_view_classifier(references, steps=args.steps, seed=args.seed, members=args.members)
    per_object = ceiling(classifier, seed=args.seed + 1000)
    result = {"view_accuracy_on_true_renders": sum(per_object.values()) / len(per_object), "per_object": per_object}
    provenance = {
        "command": "python scripts/train_view_classifier.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "seconds": round(time.monotonic() - start, 1),
        **result,
    }
    classifier.save(args.out, provenance)
    print(f"wrote {args.out} in {provenance['seconds']:.0f} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
