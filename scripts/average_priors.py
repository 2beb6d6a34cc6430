"""Average the weights of prior folders that share one ancestry (a "model soup", Wortsman et al. 2022).

    python scripts/average_priors.py outputs/prior_nm3/export outputs/prior_nm4/export --out outputs/prior_soup/export
        [--weights 0.5 0.5]

Two fine-tunes of the same weights that each lead in one domain (colour renders, normal maps) often
keep both leads when averaged, at no training cost (docs/prior_notes.md). The folders must have the
same architecture and vocabulary; the result is written atomically in the same fp16 layout, with a
provenance.json that keeps every input's history.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundled.prior.model import build_tokenizer  # noqa: E402
from bundled.prior.sampling import load_prior  # noqa: E402
from bundled.prior.weights import save_prior  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("priors", type=Path, nargs="+", help="exported prior folders (at least two)")
    parser.add_argument("--out", type=Path, required=True, help="the folder to write")
    parser.add_argument("--weights", type=float, nargs="+", default=None, help="one per prior, summing to 1 (default: equal)")
    args = parser.parse_args(argv)
    if len(args.priors) < 2:
        parser.error(f"priors: give at least two folders, got {len(args.priors)}")
    weights = args.weights or [1.0 / len(args.priors)] * len(args.priors)
    if len(weights) != len(args.priors) or abs(sum(weights) - 1.0) > 1e-6 or min(weights) < 0:
        parser.error(f"--weights {args.weights}: need {len(args.priors)} non-negative numbers summing to 1")
    args.weights = weights
    for folder in args.priors:
        if not (folder / "provenance.json").is_file():
            parser.error(f"prior {folder}: no provenance.json there; is it an exported prior folder?")
    return args


def average_state_dicts(states: list[dict[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
    """The weighted mean of state dicts with the same keys and shapes (fp32)."""
    for index, state in enumerate(states[1:], start=1):
        if state.keys() != states[0].keys() or any(state[k].shape != states[0][k].shape for k in state):
            raise ValueError(f"prior {index} does not have the first prior's parameters and shapes")
    return {key: sum(w * state[key].float() for w, state in zip(weights, states)) for key in states[0]}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    provenances = [json.loads((folder / "provenance.json").read_text()) for folder in args.priors]
    if any(p.get("architecture") != provenances[0].get("architecture") for p in provenances):
        raise SystemExit(f"priors {[str(f) for f in args.priors]} have different architectures: they cannot be averaged")
    priors = [load_prior(folder) for folder in args.priors]
    # A fresh tokenizer, as train_prior.py writes it (a loaded one saves its loading options too).
    tokenizer = build_tokenizer()
    if any(len(p.tokenizer) != len(tokenizer) for p in priors):
        raise SystemExit(f"priors {[str(f) for f in args.priors]}: a vocabulary differs from today's tokenizer; fine-tune them to it first")
    try:
        unet = average_state_dicts([p.unet.state_dict() for p in priors], args.weights)
        text_encoder = average_state_dicts([p.text_encoder.state_dict() for p in priors], args.weights)
    except ValueError as error:
        raise SystemExit(f"{error}: they cannot be averaged") from error
    first = priors[0]
    first.unet.load_state_dict(unet)
    first.text_encoder.load_state_dict(text_encoder)
    command = "python scripts/average_priors.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    longest = max((p.get("history", [p["command"]]) for p in provenances), key=len)  # a later fine-tune's holds its start's
    provenance = {
        **provenances[0],
        "command": command,
        "history": [*longest, command],
        "averaged": [{"folder": str(folder), "weight": weight, **p} for folder, weight, p in zip(args.priors, args.weights, provenances)],
    }
    save_prior(args.out, first.unet, first.text_encoder, tokenizer, first.scheduler, provenance)
    print(f"wrote the average of {len(priors)} priors to {args.out}")


if __name__ == "__main__":
    main()
