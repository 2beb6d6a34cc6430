"""Teach the bundled text prior a new caption domain with a LoRA adapter of its own.

    python scripts/train_prior_adapter.py --work-dir outputs/prior_normal_map --steps 800 [--device cuda --batch-size 128]

The prior's UNet stays frozen; a peft LoRA on its attention projections and residual convolutions
learns the domain's renders (`--domain normal_map`: camera-space normal maps of the world,
captioned "a normal map of a cube, front view", a tenth of them uncaptioned for classifier-free
guidance), and the embeddings of the domain's words the vocabulary lacked ("normal", "map") learn
beside it. The export is the whole prior folder: the base's files as they were, the text encoder
with the new words' rows appended, and `adapters/<domain>/` (`framework.guidance.domain_adapters`),
which every guidance and sampler switches on for captions that start with the domain's prefix.
Every other caption runs the base UNet bit for bit, so what the prior could do stays exactly as it
was: full fine-tunes traded the two domains against each other in this small UNet
(docs/prior_notes.md).

Checkpoints go to WORK_DIR/checkpoint.pt (atomically); the same command resumes exactly. When the
last step is done the EMA weights go to --export-dir.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundled.prior.dataset import RenderedSet, captions_for, render_set  # noqa: E402
from bundled.prior.model import MAX_TOKENS, build_tokenizer  # noqa: E402
from bundled.prior.sampling import load_prior  # noqa: E402
from bundled.prior.render_cache import cached_renders  # noqa: E402
from bundled.prior.training import cosine_learning_rate, loss_weights, train_only_rows  # noqa: E402
from bundled.prior.training_run import TrainingRun, add_run_arguments, check_run_arguments, require_positive  # noqa: E402
from bundled.prior.weights import BUNDLED_PRIOR_DIR, project_relative  # noqa: E402
from bundled.world.objects import NORMAL_MAP_CAPTION_PREFIX  # noqa: E402
from framework.guidance.domain_adapters import ADAPTERS_SUBFOLDER, save_domain_adapter  # noqa: E402
from framework.utils.atomic import atomic_directory  # noqa: E402

CAPTION_PREFIXES = {"normal_map": NORMAL_MAP_CAPTION_PREFIX}
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", choices=tuple(CAPTION_PREFIXES), default="normal_map")
    parser.add_argument("--base", type=Path, default=BUNDLED_PRIOR_DIR, help="the prior folder the adapter is for (it is not changed)")
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank")
    parser.add_argument("--targets", nargs="+", default=list(LORA_TARGETS), help="module names the LoRA wraps")
    parser.add_argument("--min-snr-gamma", type=float, default=5.0)
    parser.add_argument("--dataset-size", type=int, default=6144, help="renders of the domain")
    parser.add_argument("--caption-dropout", type=float, default=0.1)
    parser.add_argument("--plain-caption-prob", type=float, default=0.2)
    parser.add_argument("--render-workers", type=int, default=2)
    add_run_arguments(parser, work_dir="outputs/prior_adapter", export_dir=BUNDLED_PRIOR_DIR, steps=800, batch_size=32, lr=1e-3, warmup_steps=50, export_dir_note=": the base folder with its new adapter")
    args = parser.parse_args(argv)
    require_positive(parser, args, "rank", "dataset_size", "render_workers")
    check_run_arguments(parser, args)
    if not (args.base / "provenance.json").is_file():
        parser.error(f"--base={args.base}: no provenance.json there; is it an exported prior folder?")
    if (args.base / ADAPTERS_SUBFOLDER / args.domain).exists():
        parser.error(f"--base={args.base} already has an adapter for {args.domain!r}: give a base without it")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    base = load_prior(args.base, device)
    unet, text_encoder, scheduler = base.unet, base.text_encoder, base.scheduler
    tokenizer = build_tokenizer()
    known_words = text_encoder.get_input_embeddings().num_embeddings
    if known_words < len(tokenizer):  # the domain's words, appended: every older word keeps its id and its row
        text_encoder.resize_token_embeddings(len(tokenizer))
    unet.requires_grad_(False)
    text_encoder.requires_grad_(False)
    from peft import LoraConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        unet.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank, init_lora_weights="gaussian", target_modules=list(args.targets)), adapter_name=args.domain)
    lora = [p for p in unet.parameters() if p.requires_grad]
    embedding = text_encoder.get_input_embeddings().weight
    train_only_rows(embedding, list(range(known_words, len(tokenizer))))
    optimizer = torch.optim.AdamW([{"params": lora}, {"params": [embedding], "weight_decay": 0.0}], lr=args.lr, weight_decay=0.01)
    architecture = {"domain": args.domain, "rank": args.rank, "targets": sorted(args.targets), "base": project_relative(args.base)}
    state = TrainingRun(args.work_dir / "checkpoint.pt", {"unet": unet, "text_encoder": text_encoder}, optimizer, torch.Generator().manual_seed(args.seed + 1), architecture, device)
    if not state.restore(required=args.export_only):
        state.history.append(f"(a {args.domain} adapter for the prior at {project_relative(args.base)}, which stays as it was)")
    command = state.credit("python scripts/train_prior_adapter.py " + " ".join(argv if argv is not None else sys.argv[1:]), args.export_only)

    def export() -> None:
        provenance = json.loads((args.base / "provenance.json").read_text())
        adapter = {**state.provenance(command, args), "dataset_size": args.dataset_size, "rank": args.rank, "targets": sorted(args.targets), "caption_prefix": CAPTION_PREFIXES[args.domain]}
        provenance["adapters"] = {**provenance.get("adapters", {}), args.domain: adapter}
        with atomic_directory(args.export_dir) as tmp:
            for item in args.base.iterdir():
                if item.name not in ("text_encoder", "tokenizer", "provenance.json"):
                    (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
            with state.ema_weights():
                text_encoder.to(torch.float16).save_pretrained(tmp / "text_encoder", safe_serialization=True)
                text_encoder.to(torch.float32)
                save_domain_adapter(tmp, unet, args.domain, CAPTION_PREFIXES[args.domain])
            build_tokenizer().save_pretrained(tmp / "tokenizer")
            (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
        print(f"exported the EMA weights at step {state.step} to {args.export_dir}")

    if args.export_only:
        export()
        return

    data = RenderedSet(
        **cached_renders(
            args.work_dir / f"{args.domain}_n{args.dataset_size}_r{base.resolution}_s{args.seed + 1}.pt",  # seed + 1: the text prior's normal maps
            lambda: render_set(args.dataset_size, base.resolution, args.seed + 1, workers=args.render_workers, domain=args.domain),
        )
    )
    images_on_device = data.images.to(device)
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(device)
    weight = loss_weights(scheduler.alphas_cumprod, args.min_snr_gamma, 0.0)
    generator = state.generator

    def step() -> dict[str, torch.Tensor]:
        rows = torch.randint(len(data), (args.batch_size,), generator=generator)
        x0 = images_on_device[rows.to(device)].permute(0, 3, 1, 2).float() / 127.5 - 1.0
        captions = captions_for(data, rows, generator, args.caption_dropout, args.plain_caption_prob)
        ids = tokenizer(captions, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt").input_ids.to(device)
        timesteps = torch.randint(scheduler.config.num_train_timesteps, (args.batch_size,), generator=generator).to(device)
        noise = torch.randn(x0.shape, generator=generator).to(device)
        for group in optimizer.param_groups:
            group["lr"] = cosine_learning_rate(state.step, args.lr, args.warmup_steps, args.steps)
        prediction = unet(scheduler.add_noise(x0, noise, timesteps), timesteps, encoder_hidden_states=text_encoder(ids).last_hidden_state).sample
        per_sample = F.mse_loss(prediction, scheduler.get_velocity(x0, noise, timesteps), reduction="none").mean(dim=(1, 2, 3))
        loss = (per_sample * weight[timesteps]).mean()
        state.optimise(loss, args.ema_decay)
        return {"loss": loss}

    if state.train(step, args.steps, f"training {args.domain} adapter", stop_at_step=args.stop_at_step, time_limit_minutes=args.time_limit_minutes, checkpoint_minutes=args.checkpoint_minutes):
        export()


if __name__ == "__main__":
    main()
