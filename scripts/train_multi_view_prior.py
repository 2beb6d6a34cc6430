"""Fine-tune the bundled text prior into the bundled multi-view prior (MVDream's recipe on the
procedural world).

    python scripts/train_multi_view_prior.py --work-dir outputs/mv_prior --steps 2000 [--device cuda --batch-size 128]

The UNet gains a zero-initialised camera embedding and self-attention across the 4 views of a
view set (bundled/prior/multi_view_model.py), and with `--camera-rays` input channels that read
each view's ray map (framework/guidance/camera_rays.py). Batches mix 4-view sets (orbit azimuths 90 degrees
apart, one random elevation; plain captions "a red mug", or with `--view-words-share` each view's
caption naming the side its camera sees, as the text prior's) with single images of the text prior's
data (its view-dependent captions, no camera, 2D attention), so the text prior's skills stay. The
text encoder is frozen. Checkpoints go to WORK_DIR/checkpoint.pt (atomically); the same command
resumes exactly. When the last step is done the EMA weights go to --export-dir.

`--domain normal_depth` or `--domain albedo` makes RichDreamer's priors instead: the same recipe on
4-view sets and single images of that domain (normal map + depth map, 4 channels; unlit colours),
usually started from the shipped multi-view prior (`--init-from bundled/multi_view_prior_weights`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundled.prior.dataset import COLOUR_NAMES, OBJECT_NAMES, RenderedSet, captions_for, domain_channels, render_set  # noqa: E402
from bundled.prior.model import MAX_TOKENS, PriorArchitecture, build_scheduler, build_tokenizer  # noqa: E402
from bundled.prior.multi_view_model import DOMAIN_PRIOR_DIRS, NUM_VIEWS, build_multi_view_unet, inflate_text_prior, reads_camera_rays  # noqa: E402
from bundled.prior.render_cache import cached_renders  # noqa: E402
from bundled.prior.sampling import load_prior  # noqa: E402
from bundled.prior.training import cosine_learning_rate, loss_weights  # noqa: E402
from bundled.prior.training_run import TrainingRun, add_run_arguments, check_run_arguments, exported_history, require_positive  # noqa: E402
from bundled.prior.view_pairs import ViewGroups, render_view_groups  # noqa: E402
from bundled.prior.weights import BUNDLED_PRIOR_DIR, project_relative, save_prior  # noqa: E402
from bundled.world.objects import caption  # noqa: E402
from framework.guidance.camera_condition import camera_condition  # noqa: E402
from framework.guidance.camera_rays import with_camera_rays  # noqa: E402
from framework.guidance.multi_view_attention import set_multi_view_attention  # noqa: E402
from framework.guidance.prompts import view_captions  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", choices=tuple(DOMAIN_PRIOR_DIRS), default="colour", help="what the prior learns: shaded colour renders, normal-depth maps or albedo (RichDreamer's priors)")
    parser.add_argument("--init-from", type=Path, default=BUNDLED_PRIOR_DIR, help="the text prior folder to inflate, or a multi-view prior folder to fine-tune further")
    parser.add_argument(
        "--camera-x0-weight-floor",
        type=float,
        default=0.0,
        help="the camera embedding learns from the x0 error weighted at least this much at every timestep (the rest of the UNet keeps min-SNR, "
        "which gives the noisiest timesteps, where a view set's orientation is chosen, almost no weight); 0: min-SNR for all",
    )
    parser.add_argument(
        "--camera-rays",
        action="store_true",
        help="the UNet also reads each view's ray map as input channels (framework/guidance/camera_rays.py), which start at zero; "
        "implied when --init-from reads them already",
    )
    parser.add_argument(
        "--x0-weight-floor",
        type=float,
        default=0.0,
        help="every multi-view sample's x0 error is weighted at least this much (min-SNR alone gives the noisiest timesteps, where the views' "
        "orientation is chosen, almost none); 0: min-SNR",
    )
    parser.add_argument("--view-words-share", type=float, default=0.0, help="share of 4-view sets whose captions name each view's side (', back view'), so guidance.view_dependent=true can steer the orientation")
    parser.add_argument("--multi-view-share", type=float, default=0.7, help="share of steps on 4-view sets (the rest: single images)")
    parser.add_argument(
        "--camera-lr-scale",
        type=float,
        default=1.0,
        help="the camera embedding's learning rate as a multiple of --lr (it starts at zero and only the noisiest, least weighted timesteps need it)",
    )
    parser.add_argument("--min-snr-gamma", type=float, default=5.0)
    parser.add_argument("--sets", type=int, default=3072, help="rendered 4-view sets")
    parser.add_argument("--dataset-size", type=int, default=12288, help="single renders (the text prior's data)")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--render-workers", type=int, default=min(os.cpu_count() or 1, 8))
    parser.add_argument("--caption-dropout", type=float, default=0.1)
    add_run_arguments(
        parser,
        work_dir="outputs/multi_view_prior",
        export_dir=None,
        steps=2000,
        batch_size=32,  # a multi-view step: batch-size / 4 view sets
        lr=1.5e-4,
        warmup_steps=50,
        export_dir_note=" (default: the domain's bundled folder, bundled/multi_view_prior_weights for colour)",
    )
    args = parser.parse_args(argv)
    require_positive(parser, args, "sets", "dataset_size", "resolution", "render_workers")
    check_run_arguments(parser, args)
    if args.batch_size < NUM_VIEWS or args.batch_size % NUM_VIEWS:
        parser.error(f"--batch-size={args.batch_size} must be a positive multiple of {NUM_VIEWS} (whole view sets)")
    if not 0.0 <= args.multi_view_share <= 1.0:
        parser.error(f"--multi-view-share={args.multi_view_share} must be in [0, 1]")
    for flag in ("camera_x0_weight_floor", "x0_weight_floor"):
        if getattr(args, flag) < 0:
            parser.error(f"--{flag.replace('_', '-')}={getattr(args, flag)} must be >= 0")
    if args.camera_lr_scale <= 0:
        parser.error(f"--camera-lr-scale={args.camera_lr_scale} must be positive")
    if not 0.0 <= args.view_words_share <= 1.0:
        parser.error(f"--view-words-share={args.view_words_share} must be in [0, 1]")
    if not (args.init_from / "unet").is_dir():
        parser.error(f"--init-from={args.init_from}: no text prior there (no unet/ folder)")
    if args.export_dir is None:
        args.export_dir = DOMAIN_PRIOR_DIRS[args.domain]
    return args


class CameraGradientReweighting:
    """Scales, per sample, the gradient that reaches the camera embedding through its output, so
    the camera learns from another timestep weighting than the rest of the UNet in the same
    backward pass. Exact because a sample's camera embedding affects only its own view set, whose
    views share one timestep."""

    def __init__(self, embedding: torch.nn.Module) -> None:
        self.scale: torch.Tensor | None = None
        embedding.register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if self.scale is not None and output.requires_grad:
            scale = self.scale.to(output.dtype)[:, None]
            output.register_hook(lambda grad: grad * scale)


def set_batch(sets: ViewGroups, count: int, generator: torch.Generator, dropout: float, view_words_share: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(images [4 count, H, W, 3] uint8, cameras [4 count, 16], captions) of `count` random view
    sets; a `view_words_share` of the sets have each view's side in its caption."""
    rows = torch.randint(len(sets), (count,), generator=generator)
    views = torch.arange(NUM_VIEWS).repeat(count)
    groups = rows.repeat_interleave(NUM_VIEWS)
    drop = (torch.rand(count, generator=generator) < dropout).tolist()
    # Drawn only when asked for, so runs without view words draw what they always drew.
    worded = (torch.rand(count, generator=generator) < view_words_share).tolist() if view_words_share > 0 else [False] * count
    captions = []
    for r, d, w in zip(rows.tolist(), drop, worded):
        texts = [caption(COLOUR_NAMES[int(sets.colour[r])], OBJECT_NAMES[int(sets.object[r])])] * NUM_VIEWS
        if w:
            texts = view_captions(texts, sets.elevation_deg[r], sets.azimuth_deg[r])
        captions += [""] * NUM_VIEWS if d else texts
    return sets.images[groups, views], camera_condition(sets.cameras(groups, views)), captions


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    text_prior = load_prior(args.init_from)
    arch = PriorArchitecture(resolution=args.resolution)
    camera_rays = args.camera_rays or reads_camera_rays(text_prior.unet)
    unet = build_multi_view_unet(arch, domain_channels(args.domain), camera_rays).to(device)
    text_encoder = text_prior.text_encoder.to(device).requires_grad_(False)
    tokenizer = build_tokenizer()
    scheduler = build_scheduler()
    command = "python scripts/train_multi_view_prior.py " + " ".join(argv if argv is not None else sys.argv[1:])
    camera = list(unet.class_embedding.parameters())
    others = [p for name, p in unet.named_parameters() if not name.startswith("class_embedding.")]
    optimizer = torch.optim.AdamW([{"params": others, "lr_scale": 1.0}, {"params": camera, "lr_scale": args.camera_lr_scale}], lr=args.lr, weight_decay=0.01)
    architecture = {
        "unet": vars(arch),
        "num_views": NUM_VIEWS,
        **({"domain": args.domain} if args.domain != "colour" else {}),
        **({"camera_rays": True} if camera_rays else {}),
    }
    state = TrainingRun(args.work_dir / "checkpoint.pt", {"unet": unet}, optimizer, torch.Generator().manual_seed(args.seed + 1), architecture, device)
    if not state.restore(required=args.export_only):
        inflate_text_prior(unet, text_prior.unet.to(device))
        state.reset_ema()
        if text_prior.unet.config.class_embed_type:  # a multi-view prior: its own history comes first
            state.history += exported_history(args.init_from) + [f"(fine-tuned further from the multi-view prior at {project_relative(args.init_from)})"]
        else:
            state.history.append(f"(inflated from the text prior at {project_relative(args.init_from)})")
    command = state.credit(command, args.export_only)

    def export() -> None:
        provenance = {**state.provenance(command, args), "multi_view_share": args.multi_view_share, "sets": args.sets, "num_views": NUM_VIEWS, "domain": args.domain, "architecture": vars(arch), "camera_rays": camera_rays}
        with state.ema_weights():
            save_prior(args.export_dir, unet, text_encoder, build_tokenizer(), scheduler, provenance, class_name="BundledMultiViewPrior")
        print(f"exported the EMA weights at step {state.step} to {args.export_dir}")

    if args.export_only:
        export()
        return

    suffix = "" if args.domain == "colour" else f"_{args.domain}"
    sets = ViewGroups(
        **cached_renders(
            args.work_dir / f"sets_{args.sets}_r{args.resolution}_s{args.seed}{suffix}.pt",
            lambda: render_view_groups(args.sets, NUM_VIEWS, args.resolution, args.seed, args.render_workers, held_out=(), orbit_sets=True, domain=args.domain),
        )
    )
    singles = RenderedSet(
        **cached_renders(
            args.work_dir / f"renders_n{args.dataset_size}_r{args.resolution}_s{args.seed}{suffix}.pt",
            lambda: render_set(args.dataset_size, args.resolution, args.seed, workers=args.render_workers, domain=args.domain),
        )
    )
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(device)
    single_weight = loss_weights(scheduler.alphas_cumprod, args.min_snr_gamma, 0.0)
    set_weight = loss_weights(scheduler.alphas_cumprod, args.min_snr_gamma, args.x0_weight_floor)
    camera_gradient_scale = loss_weights(scheduler.alphas_cumprod, args.min_snr_gamma, max(args.camera_x0_weight_floor, args.x0_weight_floor)) / set_weight
    reweigh_camera = CameraGradientReweighting(unet.class_embedding)
    generator = state.generator

    def step() -> dict[str, object]:
        multi_view = bool(torch.rand(1, generator=generator) < args.multi_view_share)
        if multi_view:
            images, cameras, captions = set_batch(sets, args.batch_size // NUM_VIEWS, generator, args.caption_dropout, args.view_words_share)
        else:
            rows = torch.randint(len(singles), (args.batch_size,), generator=generator)
            images, cameras = singles.images[rows], torch.zeros(args.batch_size, 16)
            captions = captions_for(singles, rows, generator, args.caption_dropout, 0.2)
        set_multi_view_attention(unet, NUM_VIEWS if multi_view else 1)
        x0 = images.to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        ids = tokenizer(captions, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt").input_ids.to(device)
        timesteps = torch.randint(scheduler.config.num_train_timesteps, (args.batch_size // NUM_VIEWS if multi_view else args.batch_size,), generator=generator)
        if multi_view:  # one noise level per view set, as MVDream
            timesteps = timesteps.repeat_interleave(NUM_VIEWS)
        timesteps = timesteps.to(device)
        noise = torch.randn(x0.shape, generator=generator).to(device)
        for group in optimizer.param_groups:
            group["lr"] = group["lr_scale"] * cosine_learning_rate(state.step, args.lr, args.warmup_steps, args.steps)
        with torch.no_grad():
            embeddings = text_encoder(ids).last_hidden_state
        reweigh_camera.scale = camera_gradient_scale[timesteps] if multi_view and args.camera_x0_weight_floor > 0 else None
        cameras = cameras.to(device)
        inputs = with_camera_rays(scheduler.add_noise(x0, noise, timesteps), cameras, unet.config.in_channels)
        prediction = unet(inputs, timesteps, encoder_hidden_states=embeddings, class_labels=cameras).sample
        per_sample = F.mse_loss(prediction, scheduler.get_velocity(x0, noise, timesteps), reduction="none").mean(dim=(1, 2, 3))
        loss = (per_sample * (set_weight if multi_view else single_weight)[timesteps]).mean()
        state.optimise(loss, args.ema_decay, clip_each_group=args.camera_x0_weight_floor > 0)
        return {"loss": loss, "views": NUM_VIEWS if multi_view else 1}

    description = f"training multi-view prior ({args.domain})"
    if state.train(step, args.steps, description, stop_at_step=args.stop_at_step, time_limit_minutes=args.time_limit_minutes, checkpoint_minutes=args.checkpoint_minutes):
        export()


if __name__ == "__main__":
    main()
