"""Train the bundled point-cloud prior (GSGEN's 3D prior: Point-E's denoiser) on the procedural world.

    python scripts/train_point_cloud_prior.py --work-dir outputs/point_cloud_prior --steps 4000 --seed 0 [--device cuda --batch-size 64]

Each step draws fresh surface clouds of random (colour, object) captions; captions are dropped to
the zero embedding with --caption-dropout for classifier-free guidance. Checkpoints go to
WORK_DIR/checkpoint.pt (atomically, every --checkpoint-every steps and when the run stops);
running the same command again resumes exactly where it stopped. When the last step is done the
EMA weights are written to --export-dir (`bundled.prior.point_cloud_model` describes the layout).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundled.prior.point_cloud_model import CONVENTION, POINT_CLOUD_PRIOR_DIR, PointCloudPriorArchitecture, build_point_cloud_model, build_text_encoder  # noqa: E402
from bundled.prior.point_cloud_training import LOSS_WEIGHTINGS, code_version, draw_batch, epsilon_loss, utc_now  # noqa: E402
from bundled.prior.training import cosine_learning_rate  # noqa: E402
from bundled.prior.training_run import TrainingRun, add_run_arguments, check_run_arguments, require_positive  # noqa: E402
from framework.guidance.bag_of_words import BagOfWordsTextEncoder  # noqa: E402
from framework.guidance.point_cloud_prior import PointCloudPrior, load_point_cloud_prior, save_point_cloud_prior  # noqa: E402
from framework.guidance.point_e import PointETransformer, point_e_scheduler  # noqa: E402

_DEFAULT = PointCloudPriorArchitecture()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--caption-dropout", type=float, default=0.1, help="share of captions replaced by the zero embedding")
    parser.add_argument("--loss-weighting", choices=LOSS_WEIGHTINGS, default="x0", help="x0: the epsilon error weighted by 1/SNR (capped), which makes the caption count; epsilon: uniform, as Point-E")
    add_run_arguments(parser, work_dir="outputs/point_cloud_prior", export_dir=POINT_CLOUD_PRIOR_DIR, steps=4000, batch_size=16, lr=5e-4, warmup_steps=100, checkpoint_every_steps=100)
    parser.add_argument("--width", type=int, default=_DEFAULT.width)
    parser.add_argument("--layers", type=int, default=_DEFAULT.layers)
    parser.add_argument("--heads", type=int, default=_DEFAULT.heads)
    parser.add_argument("--text-dim", type=int, default=_DEFAULT.text_dim)
    parser.add_argument("--points", type=int, default=_DEFAULT.points, help="points per training cloud (the model's n_ctx)")
    parser.add_argument("--init-from", type=Path, default=None, help="a point prior folder of the same sizes whose weights start a new run, e.g. one trained on fewer --points (cheaper steps; the model has no positional embedding)")
    args = parser.parse_args(argv)
    require_positive(parser, args, "width", "layers", "heads", "text_dim", "points")
    check_run_arguments(parser, args)
    if args.width % args.heads:
        parser.error(f"--width={args.width} must be a multiple of --heads={args.heads}")
    if not 0.0 <= args.caption_dropout < 1.0:
        parser.error(f"--caption-dropout={args.caption_dropout} must be in [0, 1)")
    return args


def start_from(folder: Path, model: PointETransformer, text_encoder: BagOfWordsTextEncoder) -> PointCloudPrior:
    """Copy the weights of the prior in `folder` into `model` and `text_encoder`; its sizes must
    match theirs except the point count. A checkpoint in --work-dir, if any, replaces them after."""
    try:
        source = load_point_cloud_prior(folder)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"--init-from={folder}: {error}") from None
    if replace(source.model.config, n_ctx=model.config.n_ctx) != model.config or source.text_encoder.vocabulary != text_encoder.vocabulary or source.text_encoder.dim != text_encoder.dim:
        raise SystemExit(f"--init-from={folder}: its sizes {source.model.config} (text dim {source.text_encoder.dim}) differ from this run's {model.config} (text dim {text_encoder.dim})")
    model.load_state_dict(source.model.state_dict())
    text_encoder.load_state_dict(source.text_encoder.state_dict())
    return source


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    arch = PointCloudPriorArchitecture(width=args.width, layers=args.layers, heads=args.heads, text_dim=args.text_dim, points=args.points)
    model, text_encoder = build_point_cloud_model(arch).to(device), build_text_encoder(arch).to(device)
    source = None if args.init_from is None else start_from(args.init_from, model, text_encoder)
    optimizer = torch.optim.AdamW([*model.parameters(), *text_encoder.parameters()], lr=args.lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(args.seed + 1)
    state = TrainingRun(args.work_dir / "checkpoint.pt", {"model": model, "text_encoder": text_encoder}, optimizer, generator, vars(arch), device)
    if not state.restore(required=args.export_only) and source is not None:
        state.history += list(source.provenance.get("history", [])) + [f"(fine-tuned from the point prior at {args.init_from})"]
    command = "python scripts/train_point_cloud_prior.py " + " ".join(argv if argv is not None else sys.argv[1:])
    command = state.credit(command, args.export_only)

    def export() -> None:
        provenance = {
            **state.provenance(command, args),
            "caption_dropout": args.caption_dropout,
            "loss_weighting": args.loss_weighting,
            "architecture": vars(arch),
            "date": utc_now(),
            **code_version(),
        }
        with state.ema_weights():
            save_point_cloud_prior(args.export_dir, model, text_encoder, CONVENTION, provenance)
        print(f"exported the EMA weights at step {state.step} to {args.export_dir}")

    if args.export_only:
        export()
        return

    scheduler = point_e_scheduler()

    def step() -> dict[str, torch.Tensor]:
        clean, captions = draw_batch(args.batch_size, args.points, generator, args.caption_dropout)
        for group in optimizer.param_groups:
            group["lr"] = cosine_learning_rate(state.step, args.lr, args.warmup_steps, args.steps)
        loss = epsilon_loss(model, text_encoder, scheduler, clean.to(device), captions, generator, args.loss_weighting)
        state.optimise(loss, args.ema_decay)
        return {"loss": loss}

    if state.train(step, args.steps, "training point prior", stop_at_step=args.stop_at_step, time_limit_minutes=args.time_limit_minutes, checkpoint_every=args.checkpoint_every):
        export()


if __name__ == "__main__":
    main()
