"""Train the bundled pixel-space prior on renders of the procedural object world.

    python scripts/train_prior.py --work-dir outputs/prior --steps 2400 --seed 0 [--device cuda --batch-size 128]
        [--normal-map-share 0.4]   # a share of every batch from normal-map renders

Checkpoints go to WORK_DIR/checkpoint.pt (atomically, every --checkpoint-minutes); running the
same command again resumes exactly where it stopped. When the last step is done the EMA weights
are written to the package's bundled folder (or --export-dir).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundled.prior.dataset import DOMAINS, OBJECT_NAMES, RenderedSet, captions_for, render_set  # noqa: E402
from bundled.prior.model import (  # noqa: E402
    MAX_TOKENS,
    PriorArchitecture,
    build_scheduler,
    build_text_encoder,
    build_tokenizer,
    build_unet,
)
from bundled.prior.render_cache import cached_renders  # noqa: E402
from bundled.prior.sampling import load_prior  # noqa: E402
from bundled.prior.training import cosine_learning_rate, loss_weights, train_only_rows  # noqa: E402
from bundled.prior.training_run import TrainingRun, add_run_arguments, check_run_arguments, exported_history, require_positive  # noqa: E402
from bundled.prior.weights import BUNDLED_PRIOR_DIR, save_prior  # noqa: E402
from bundled.world.objects import OBJECTS  # noqa: E402
from framework.guidance.prompts import VIEWS  # noqa: E402


def _heads(text: str) -> int | tuple[int, ...]:
    counts = _int_list(text)
    return counts[0] if len(counts) == 1 else counts


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


def _object_weight(text: str) -> tuple[str, float]:
    name, sep, weight = text.partition("=")
    if not sep or name not in OBJECT_NAMES:
        raise argparse.ArgumentTypeError(f"{text!r}: expected OBJECT=WEIGHT with OBJECT one of {', '.join(OBJECT_NAMES)}")
    try:
        value = float(weight)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: the weight {weight!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the weight must be positive")
    return name, value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, work_dir="outputs/prior", export_dir=BUNDLED_PRIOR_DIR, steps=1600, batch_size=32, lr=5e-4, warmup_steps=100)
    parser.add_argument("--min-snr-gamma", type=float, default=5.0)
    parser.add_argument(
        "--x0-weight-floor",
        type=float,
        default=0.0,
        help="lower bound of the x0-error weight (min-SNR gives the noisiest timesteps, where the "
        "outline is chosen, almost none; 1 keeps them at full weight)",
    )
    parser.add_argument("--dataset-size", type=int, default=16384)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument(
        "--render-workers", type=int, default=min(os.cpu_count() or 1, 8), help="processes that render the training images (the images do not depend on it)"
    )
    parser.add_argument(
        "--normal-map-share",
        type=float,
        default=0.0,
        help="expected share of every batch drawn from camera-space normal-map renders captioned "
        "'a normal map of a cube, front view' (Fantasia3D's geometry stage); 0: colour renders only",
    )
    parser.add_argument("--normal-map-dataset-size", type=int, default=6144, help="normal-map renders (when --normal-map-share > 0)")
    parser.add_argument("--caption-dropout", type=float, default=0.1)
    parser.add_argument("--plain-caption-prob", type=float, default=0.2)
    parser.add_argument(
        "--front-object-weight",
        type=float,
        default=1.0,
        help="draw the training images of objects with a front (mug, house, snowman) this many times as often as the others (1: uniform)",
    )
    parser.add_argument(
        "--front-back-weight",
        type=float,
        default=1.0,
        help="draw the images of objects with a front seen from the front or the back this many times as often (on top of --front-object-weight)",
    )
    parser.add_argument(
        "--object-weight",
        type=_object_weight,
        action="append",
        default=[],
        metavar="OBJECT=WEIGHT",
        help="draw one object's images (both domains) this many times as often, e.g. cylinder=3 for an object "
        "the evaluation shows the prior has not learnt well; repeatable",
    )
    parser.add_argument(
        "--freeze-text-encoder",
        action="store_true",
        help="train the UNet only (fine-tuning: the words keep the embeddings that score distillation was measured with)",
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="start a new run from an exported prior folder's weights (fine-tuning; fresh optimiser and schedule)",
    )
    parser.add_argument(
        "--block-channels", type=_int_list, default=PriorArchitecture.block_channels, help="UNet channels per level, finest first (e.g. 24,48,96,128)"
    )
    parser.add_argument("--layers-per-block", type=int, default=PriorArchitecture.layers_per_block)
    parser.add_argument("--cross-attention-levels", type=int, default=PriorArchitecture.cross_attention_levels)
    parser.add_argument("--self-attention-levels", type=int, default=PriorArchitecture.self_attention_levels)
    parser.add_argument(
        "--attention-heads",
        type=_heads,
        default=PriorArchitecture.attention_head_dim,
        help="heads of every attention block, or one count per level (e.g. 1,1,3,4)",
    )
    args = parser.parse_args(argv)
    for flag in ("front_object_weight", "front_back_weight"):
        if getattr(args, flag) <= 0:
            parser.error(f"--{flag.replace('_', '-')}={getattr(args, flag)} must be positive")
    if not 0.0 <= args.normal_map_share < 1.0:
        parser.error(f"--normal-map-share={args.normal_map_share} must be in [0, 1)")
    require_positive(parser, args, "dataset_size", "resolution", "render_workers", "normal_map_dataset_size")
    check_run_arguments(parser, args)
    return args


def load_or_render(args: argparse.Namespace) -> RenderedSet:
    """The colour renders, and the normal-map renders after them when --normal-map-share > 0
    (each cached in the work dir; the normal maps from seed + 1, so their cameras differ)."""
    sets = [_cached_set(args, "colour", args.dataset_size, args.seed)]
    if args.normal_map_share > 0:
        sets.append(_cached_set(args, "normal_map", args.normal_map_dataset_size, args.seed + 1))
    return RenderedSet.cat(sets) if len(sets) > 1 else sets[0]


def _cached_set(args: argparse.Namespace, domain: str, size: int, seed: int) -> RenderedSet:
    prefix = "renders" if domain == "colour" else domain
    return RenderedSet(
        **cached_renders(args.work_dir / f"{prefix}_n{size}_r{args.resolution}_s{seed}.pt", lambda: render_set(size, args.resolution, seed, workers=args.render_workers, domain=domain))
    )


def draw_rows(
    data: RenderedSet,
    batch_size: int,
    generator: torch.Generator,
    front_object_weight: float = 1.0,
    front_back_weight: float = 1.0,
    normal_map_share: float = 0.0,
    object_weights: dict[str, float] | None = None,
) -> torch.Tensor:
    """Rows of one training batch: uniform, or with the objects that have a front (whose view words
    hinge on small details) `front_object_weight` times as likely as the others, and their front
    and back views a further `front_back_weight` times as likely as their side and overhead ones;
    `object_weights` scales single objects on top; normal-map rows make up `normal_map_share` of the
    draws."""
    object_weights = object_weights or {}
    if front_object_weight == 1.0 and front_back_weight == 1.0 and normal_map_share == 0.0 and not object_weights:
        return torch.randint(len(data), (batch_size,), generator=generator)
    has_front = torch.tensor([OBJECTS[name].has_front for name in OBJECT_NAMES])[data.object]
    front_or_back = (data.view == VIEWS.index("front")) | (data.view == VIEWS.index("back"))
    weight = torch.where(has_front, front_object_weight, 1.0) * torch.where(has_front & front_or_back, front_back_weight, 1.0)
    weight = weight * torch.tensor([object_weights.get(name, 1.0) for name in OBJECT_NAMES])[data.object]
    if normal_map_share > 0.0:
        normal = data.domain == DOMAINS.index("normal_map")
        if not normal.any():
            raise ValueError(f"normal_map_share={normal_map_share}, but the data holds no normal maps")
        weight = torch.where(normal, normal_map_share * weight / weight[normal].sum(), (1 - normal_map_share) * weight / weight[~normal].sum())
    return torch.multinomial(weight, batch_size, replacement=True, generator=generator)


def _load_exported(folder: Path, arch: PriorArchitecture, unet: torch.nn.Module, text_encoder: torch.nn.Module) -> tuple[list[str], list[int]]:
    """Copy an exported prior's weights into `unet` and `text_encoder`; returns the commands that
    trained them (its provenance history) and the token ids of words its vocabulary lacked (their
    embeddings start from the mean of the others, as `resize_token_embeddings` makes them)."""
    provenance_path = folder / "provenance.json"
    if not provenance_path.is_file():
        raise SystemExit(f"--init-from {folder}: no provenance.json there; is it an exported prior folder?")
    provenance = json.loads(provenance_path.read_text())
    if _plain(provenance.get("architecture")) != _plain(vars(arch)):
        raise SystemExit(f"--init-from {folder} has architecture {provenance.get('architecture')}, not {vars(arch)}: pass the same architecture flags")
    exported = load_prior(folder)  # fp16 on disk, fp32 here
    known_words = exported.text_encoder.get_input_embeddings().num_embeddings
    vocabulary = text_encoder.get_input_embeddings().num_embeddings
    if known_words < vocabulary:
        exported.text_encoder.resize_token_embeddings(vocabulary)
    unet.load_state_dict(exported.unet.state_dict())
    text_encoder.load_state_dict(exported.text_encoder.state_dict())
    return [*exported_history(folder), f"(exported to {folder}, then fine-tuned from it)"], list(range(known_words, vocabulary))


def _plain(value: object) -> object:
    """Tuples and lists compare equal (checkpoints store tuples as lists)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return list(value) if isinstance(value, (tuple, list)) else value


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    arch = PriorArchitecture(
        resolution=args.resolution,
        block_channels=args.block_channels,
        layers_per_block=args.layers_per_block,
        cross_attention_levels=args.cross_attention_levels,
        self_attention_levels=args.self_attention_levels,
        attention_head_dim=args.attention_heads,
    )
    tokenizer = build_tokenizer()
    unet = build_unet(arch).to(device)
    text_encoder = build_text_encoder(arch, len(tokenizer)).to(device)
    scheduler = build_scheduler()
    # The --init-from weights are loaded on a resume too: the words they lacked decide which rows
    # learn; the checkpoint's weights replace theirs.
    history, new_token_rows = ([], []) if args.init_from is None else _load_exported(args.init_from, arch, unet, text_encoder)
    text_encoder.requires_grad_(not args.freeze_text_encoder)  # frozen weights get no grad, so AdamW skips them
    embedding = text_encoder.get_input_embeddings().weight
    params = list(unet.parameters()) + list(text_encoder.parameters())
    if args.freeze_text_encoder and new_token_rows:
        train_only_rows(embedding, new_token_rows)
        groups = [{"params": [p for p in params if p is not embedding]}, {"params": [embedding], "weight_decay": 0.0}]
    else:
        groups = [{"params": params}]
    optimizer = torch.optim.AdamW(groups, lr=args.lr, weight_decay=0.01)
    state = TrainingRun(args.work_dir / "checkpoint.pt", {"unet": unet, "text_encoder": text_encoder}, optimizer, torch.Generator().manual_seed(args.seed + 1), vars(arch), device)
    if not state.restore(required=args.export_only):
        state.history = history
    command = state.credit("python scripts/train_prior.py " + " ".join(argv if argv is not None else sys.argv[1:]), args.export_only)

    def export() -> None:
        provenance = {
            **state.provenance(command, args),
            "dataset_size": args.dataset_size,
            "normal_map_share": args.normal_map_share,
            "normal_map_dataset_size": args.normal_map_dataset_size if args.normal_map_share > 0 else 0,
            "object_weights": dict(args.object_weight),
            "architecture": vars(arch),
        }
        with state.ema_weights():
            # A fresh tokenizer: the one used in training has padding switched on in its saved state.
            save_prior(args.export_dir, unet, text_encoder, build_tokenizer(), scheduler, provenance)
        print(f"exported the EMA weights at step {state.step} to {args.export_dir}")

    if args.export_only:
        export()
        return

    data = load_or_render(args)
    images_on_device = data.images.to(device)
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(device)
    loss_weight = loss_weights(scheduler.alphas_cumprod, args.min_snr_gamma, args.x0_weight_floor)
    generator = state.generator

    def step() -> dict[str, object]:
        index = draw_rows(data, args.batch_size, generator, args.front_object_weight, args.front_back_weight, args.normal_map_share, dict(args.object_weight))
        images = images_on_device[index.to(device)].permute(0, 3, 1, 2).float() / 127.5 - 1.0
        captions = captions_for(data, index, generator, args.caption_dropout, args.plain_caption_prob)
        ids = tokenizer(captions, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt").input_ids.to(device)
        timesteps = torch.randint(scheduler.config.num_train_timesteps, (args.batch_size,), generator=generator).to(device)
        noise = torch.randn(images.shape, generator=generator).to(device)
        noisy = scheduler.add_noise(images, noise, timesteps)
        learning_rate = cosine_learning_rate(state.step, args.lr, args.warmup_steps, args.steps)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate
        prediction = unet(noisy, timesteps, encoder_hidden_states=text_encoder(ids).last_hidden_state).sample
        per_sample = F.mse_loss(prediction, scheduler.get_velocity(images, noise, timesteps), reduction="none").mean(dim=(1, 2, 3))
        loss = (per_sample * loss_weight[timesteps]).mean()
        state.optimise(loss, args.ema_decay)
        return {"loss": loss, "lr": f"{learning_rate:.1e}"}

    if state.train(step, args.steps, "training prior", stop_at_step=args.stop_at_step, time_limit_minutes=args.time_limit_minutes, checkpoint_minutes=args.checkpoint_minutes):
        export()


if __name__ == "__main__":
    main()
