"""Train the bundled novel-view prior (Zero-1-to-3's layout, pixel space) on pairs of renders of
the procedural world.

    python scripts/train_novel_view_prior.py --work-dir outputs/nv_prior --steps 3000 [--device cuda --batch-size 128]

The UNet starts from the bundled text prior's (`--init-from`, as Zero-1-to-3 started from Stable
Diffusion). The image encoder is first pretrained as an object and colour classifier on the same
renders (`--encoder-pretrain-steps`), so its embedding carries the object's identity, as CLIP's does
for Zero-1-to-3; then it is frozen (`--freeze-image-encoder`) or trains on with the UNet and the
camera projection. The colour/object pairs of
`bundled.prior.view_pairs.HELD_OUT` are never shown. Checkpoints go to WORK_DIR/checkpoint.pt
(atomically, every --checkpoint-minutes); the same command resumes exactly. When the last step is
done the EMA weights are written to the package's bundled folder (or --export-dir).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundled.prior.image_encoder_pretraining import pretrain_image_encoder  # noqa: E402
from bundled.prior.model import PriorArchitecture, build_scheduler  # noqa: E402
from bundled.prior.novel_view_model import (  # noqa: E402
    NOVEL_VIEW_PRIOR_DIR,
    NovelViewArchitecture,
    architecture_record,
    build_feature_extractor,
    build_image_encoder,
    build_projection,
    build_unet_for_views,
    save_novel_view_prior,
    warm_start_from_text_prior,
)
from bundled.prior.render_cache import cached_renders  # noqa: E402
from bundled.prior.sampling import load_prior  # noqa: E402
from bundled.prior.training import cosine_learning_rate, loss_weights  # noqa: E402
from bundled.prior.training_run import TrainingRun, add_run_arguments, check_run_arguments, require_positive  # noqa: E402
from bundled.prior.view_pairs import HELD_OUT, ViewGroups, draw_pairs, render_view_groups  # noqa: E402
from bundled.prior.weights import BUNDLED_PRIOR_DIR, project_relative  # noqa: E402
from framework.guidance.camera_projection import relative_pose  # noqa: E402
from framework.guidance.novel_view import clip_pixels  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--init-from", type=Path, default=BUNDLED_PRIOR_DIR, help="text prior folder whose UNet starts the denoiser ('none': from scratch)")
    parser.add_argument("--min-snr-gamma", type=float, default=5.0)
    parser.add_argument("--groups", type=int, default=2048, help="rendered (object, colour) groups")
    parser.add_argument("--views", type=int, default=6, help="renders per group; any two make a pair")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--render-workers", type=int, default=min(os.cpu_count() or 1, 8))
    parser.add_argument("--encoder-pretrain-steps", type=int, default=1000, help="steps of object/colour classification for the image encoder before the denoiser trains (0: none)")
    parser.add_argument("--encoder-pretrain-lr", type=float, default=5e-4)
    parser.add_argument("--freeze-image-encoder", action="store_true", help="keep the (pretrained) image encoder fixed while the denoiser trains")
    parser.add_argument("--condition-dropout", type=float, default=0.1, help="share of rows with the image and pose zeroed (classifier-free guidance)")
    add_run_arguments(parser, work_dir="outputs/novel_view_prior", export_dir=NOVEL_VIEW_PRIOR_DIR, steps=3000, batch_size=32, lr=2e-4, warmup_steps=100)
    args = parser.parse_args(argv)
    require_positive(parser, args, "groups", "resolution", "render_workers")
    check_run_arguments(parser, args)
    if args.views < 2:
        parser.error(f"--views={args.views} must be at least 2 (a pair is two renders of one group)")
    if args.encoder_pretrain_steps < 0:
        parser.error(f"--encoder-pretrain-steps={args.encoder_pretrain_steps} must be 0 or more")
    if not 0.0 <= args.condition_dropout < 1.0:
        parser.error(f"--condition-dropout={args.condition_dropout} must be in [0, 1)")
    if str(args.init_from).lower() != "none" and not (args.init_from / "unet").is_dir():
        parser.error(f"--init-from={args.init_from}: no text prior there (no unet/ folder); pass none to start from scratch")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    arch = NovelViewArchitecture(unet=PriorArchitecture(resolution=args.resolution))
    unet = build_unet_for_views(arch).to(device)
    image_encoder = build_image_encoder(arch).to(device)
    projection = build_projection(arch).to(device)
    scheduler = build_scheduler()
    if args.freeze_image_encoder:
        image_encoder.requires_grad_(False)
    modules = {"unet": unet, "image_encoder": image_encoder, "projection": projection}
    params = [p for module in modules.values() for p in module.parameters() if p.requires_grad]
    command = "python scripts/train_novel_view_prior.py " + " ".join(argv if argv is not None else sys.argv[1:])
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    state = TrainingRun(args.work_dir / "checkpoint.pt", modules, optimizer, torch.Generator().manual_seed(args.seed + 1), architecture_record(arch), device)
    restored = state.restore(required=args.export_only)
    data = None
    if not args.export_only:
        data = ViewGroups(
            **cached_renders(
                args.work_dir / f"groups_g{args.groups}_v{args.views}_r{args.resolution}_s{args.seed}.pt",
                lambda: render_view_groups(args.groups, args.views, args.resolution, args.seed, args.render_workers),
            )
        )
    if not restored:
        if str(args.init_from).lower() != "none":
            warm_start_from_text_prior(unet, load_prior(args.init_from).unet.to(device))
            state.history.append(f"(UNet started from the text prior at {project_relative(args.init_from)})")
        if args.encoder_pretrain_steps:
            image_encoder.requires_grad_(True)
            accuracy = pretrain_image_encoder(image_encoder, data, args.encoder_pretrain_steps, 128, args.encoder_pretrain_lr, torch.Generator().manual_seed(args.seed + 2))
            image_encoder.requires_grad_(not args.freeze_image_encoder)
            scores = ", ".join(f"{name} {value:.3f}" for name, value in accuracy.items())
            state.history.append(f"(image encoder pretrained as a classifier for {args.encoder_pretrain_steps} steps: validation {scores})")
            print(state.history[-1])
        state.reset_ema()
    command = state.credit(command, args.export_only)

    def export() -> None:
        provenance = {
            **state.provenance(command, args),
            "groups": args.groups,
            "views": args.views,
            "held_out": [list(pair) for pair in HELD_OUT],
            "architecture": architecture_record(arch),
        }
        with state.ema_weights():
            save_novel_view_prior(args.export_dir, unet, image_encoder, projection, scheduler, build_feature_extractor(arch), provenance)
        print(f"exported the EMA weights at step {state.step} to {args.export_dir}")

    if args.export_only:
        export()
        return

    images = data.images.to(device)
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(device)
    loss_weight = loss_weights(scheduler.alphas_cumprod, args.min_snr_gamma, 0.0)
    encoder_size = int(image_encoder.config.image_size)

    def step() -> dict[str, torch.Tensor]:
        group, source, target_view = draw_pairs(data, args.batch_size, state.generator)
        pose = relative_pose(data.cameras(group, target_view), data.cameras(group, source)).to(device)
        keep = (torch.rand(args.batch_size, generator=state.generator) >= args.condition_dropout).to(device).float()
        timesteps = torch.randint(scheduler.config.num_train_timesteps, (args.batch_size,), generator=state.generator).to(device)
        noise = torch.randn(args.batch_size, 3, args.resolution, args.resolution, generator=state.generator).to(device)
        g, s, t = group.to(device), source.to(device), target_view.to(device)
        view_in = images[g, s].permute(0, 3, 1, 2).float() / 255.0
        target = images[g, t].permute(0, 3, 1, 2).float() / 127.5 - 1.0
        for param_group in optimizer.param_groups:
            param_group["lr"] = cosine_learning_rate(state.step, args.lr, args.warmup_steps, args.steps)
        with torch.set_grad_enabled(not args.freeze_image_encoder):
            embedding = image_encoder(clip_pixels(view_in, encoder_size)).image_embeds
        tokens = projection(torch.cat([embedding, pose], dim=-1))[:, None] * keep[:, None, None]
        concat = (view_in * 2.0 - 1.0) * keep[:, None, None, None]
        noisy = scheduler.add_noise(target, noise, timesteps)
        prediction = unet(torch.cat([noisy, concat], dim=1), timesteps, encoder_hidden_states=tokens).sample
        per_sample = F.mse_loss(prediction, scheduler.get_velocity(target, noise, timesteps), reduction="none").mean(dim=(1, 2, 3))
        loss = (per_sample * loss_weight[timesteps]).mean()
        state.optimise(loss, args.ema_decay)
        return {"loss": loss}

    if state.train(step, args.steps, "training novel-view prior", stop_at_step=args.stop_at_step, time_limit_minutes=args.time_limit_minutes, checkpoint_minutes=args.checkpoint_minutes):
        export()


if __name__ == "__main__":
    main()
