"""The prior's training script: exact resume after an interruption, and its world's renders."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import train_prior  # noqa: E402

from bundled.prior.dataset import DOMAINS, OBJECT_NAMES, RenderedSet, render_set  # noqa: E402
from bundled.prior.training_run import TrainingRun  # noqa: E402
from bundled.world.objects import OBJECTS  # noqa: E402
from framework.guidance.prompts import VIEWS  # noqa: E402


@pytest.mark.slow
def test_interrupted_training_resumes_exactly(tmp_path):
    common = ["--steps", "3", "--batch-size", "2", "--dataset-size", "16", "--warmup-steps", "1", "--checkpoint-minutes", "1000"]
    train_prior.main(["--work-dir", str(tmp_path / "straight"), "--export-dir", str(tmp_path / "straight/export"), *common])
    interrupted = ["--work-dir", str(tmp_path / "stopped"), "--export-dir", str(tmp_path / "stopped/export"), *common]
    train_prior.main([*interrupted, "--stop-at-step", "1"])
    assert not (tmp_path / "stopped/export").exists()
    train_prior.main(interrupted)
    straight = load_file(tmp_path / "straight/export/unet/diffusion_pytorch_model.safetensors")
    resumed = load_file(tmp_path / "stopped/export/unet/diffusion_pytorch_model.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    history = json.loads((tmp_path / "stopped/export/provenance.json").read_text())["history"]
    assert len(history) == 2 and "--stop-at-step 1" in history[0] and "--stop-at-step" not in history[1]


def test_front_object_weight_draws_the_objects_with_a_front_more_often():
    n = 900
    data = RenderedSet(torch.zeros(n, 1, 1, 3, dtype=torch.uint8), torch.zeros(n, dtype=torch.long), torch.arange(n) % len(OBJECT_NAMES), torch.zeros(n, dtype=torch.long))
    has_front = torch.tensor([OBJECTS[name].has_front for name in OBJECT_NAMES])
    share = has_front.float().mean()  # 3 of 9 objects
    uniform = train_prior.draw_rows(data, 20000, torch.Generator().manual_seed(0))
    weighted = train_prior.draw_rows(data, 20000, torch.Generator().manual_seed(0), front_object_weight=3.0)
    assert abs(has_front[data.object[uniform]].float().mean() - share) < 0.02
    expected = 3 * share / (3 * share + (1 - share))  # 0.6
    assert abs(has_front[data.object[weighted]].float().mean() - expected) < 0.02
    with pytest.raises(SystemExit):
        train_prior.parse_args(["--front-object-weight", "0"])


def test_front_back_weight_draws_the_front_and_back_views_of_objects_with_a_front_more_often(capsys):
    n = 9 * len(VIEWS) * 10
    data = RenderedSet(torch.zeros(n, 1, 1, 3, dtype=torch.uint8), torch.zeros(n, dtype=torch.long), torch.arange(n) % len(OBJECT_NAMES), torch.arange(n) // len(OBJECT_NAMES) % len(VIEWS))
    has_front = torch.tensor([OBJECTS[name].has_front for name in OBJECT_NAMES])[data.object]
    front_or_back = (data.view == VIEWS.index("front")) | (data.view == VIEWS.index("back"))
    rows = train_prior.draw_rows(data, 40000, torch.Generator().manual_seed(0), front_back_weight=4.0)
    # Row weights: 4 for the 3 objects' 2 of 4 views, 1 for everything else (9 x 4 cells in all).
    total = 3 * 2 * 4 + (9 * 4 - 3 * 2)
    assert abs((has_front & front_or_back)[rows].float().mean() - 3 * 2 * 4 / total) < 0.02
    assert abs((has_front & ~front_or_back)[rows].float().mean() - 3 * 2 / total) < 0.02
    with pytest.raises(SystemExit):
        train_prior.parse_args(["--front-back-weight", "-1"])
    assert "--front-back-weight=-1.0 must be positive" in capsys.readouterr().err


def test_object_weight_draws_one_object_more_often_in_both_domains(capsys):
    n = len(OBJECT_NAMES) * 200
    domain = torch.arange(n) // (n // 2)  # first half colour, second half normal maps
    data = RenderedSet(torch.zeros(n, 1, 1, 3, dtype=torch.uint8), torch.zeros(n, dtype=torch.long), torch.arange(n) % len(OBJECT_NAMES), torch.zeros(n, dtype=torch.long), domain)
    cylinder = data.object == OBJECT_NAMES.index("cylinder")
    rows = train_prior.draw_rows(data, 40000, torch.Generator().manual_seed(0), normal_map_share=0.25, object_weights={"cylinder": 3.0})
    expected = 3 / (3 + len(OBJECT_NAMES) - 1)  # 0.27 of each domain's draws
    normal = data.domain[rows] == DOMAINS.index("normal_map")
    assert abs(normal.float().mean() - 0.25) < 0.01
    assert abs(cylinder[rows][normal].float().mean() - expected) < 0.02
    assert abs(cylinder[rows][~normal].float().mean() - expected) < 0.02
    assert train_prior.parse_args(["--object-weight", "cylinder=3", "--object-weight", "mug=1.5"]).object_weight == [("cylinder", 3.0), ("mug", 1.5)]
    for bad, named in (("cylindr=3", "'cylindr=3': expected OBJECT=WEIGHT"), ("cylinder=x", "the weight 'x' is not a number"), ("cylinder=0", "must be positive")):
        with pytest.raises(SystemExit):
            train_prior.parse_args(["--object-weight", bad])
        assert named in capsys.readouterr().err


def test_loss_weights_are_min_snr_with_an_optional_floor():
    alphas_cumprod = train_prior.build_scheduler().alphas_cumprod
    snr = alphas_cumprod / (1 - alphas_cumprod)
    plain = train_prior.loss_weights(alphas_cumprod, 5.0, 0.0)
    torch.testing.assert_close(plain, torch.minimum(snr, torch.tensor(5.0)) / (snr + 1))
    floored = train_prior.loss_weights(alphas_cumprod, 5.0, 1.0)
    noisy = snr < 1
    torch.testing.assert_close(floored[noisy], 1 / (snr[noisy] + 1))  # x0 error weighted 1, not snr
    assert floored[-1] > 0.99 and plain[-1] < 1e-6
    torch.testing.assert_close(floored[~noisy], plain[~noisy])


def test_fine_levels_can_read_the_text_without_self_attention():
    arch = train_prior.PriorArchitecture(
        resolution=16, block_channels=(8, 16, 16), attention_head_dim=(1, 2, 2), cross_attention_levels=3, self_attention_levels=1
    )
    unet = train_prior.build_unet(arch)
    assert unet.config.down_block_types == ("CrossAttnDownBlock2D",) * 3
    finest, coarsest = unet.down_blocks[0].attentions[0].transformer_blocks[0], unet.down_blocks[2].attentions[0].transformer_blocks[0]
    assert finest.only_cross_attention and not coarsest.only_cross_attention
    assert finest.attn1.heads == 1 and coarsest.attn1.heads == 2
    text = torch.randn(2, 5, arch.text_width)
    out = unet(torch.randn(2, 3, 16, 16), torch.tensor([10, 900]), encoder_hidden_states=text).sample
    assert out.shape == (2, 3, 16, 16)
    # The finest level's cross-attention is on the gradient path from the text.
    out.square().sum().backward()
    assert finest.attn1.to_k.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="self_attention_levels=3"):
        train_prior.build_unet(train_prior.PriorArchitecture(cross_attention_levels=2, self_attention_levels=3))


@pytest.mark.slow
def test_resume_refuses_another_architecture_and_time_limit_checkpoints(tmp_path):
    common = ["--work-dir", str(tmp_path), "--export-dir", str(tmp_path / "export"), "--steps", "3", "--batch-size", "2", "--dataset-size", "16"]
    train_prior.main([*common, "--time-limit-minutes", "0"])  # stops before the first step, with a checkpoint
    assert int(torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"]) == 0
    assert not (tmp_path / "export").exists()
    with pytest.raises(SystemExit, match="cross_attention_levels': 2.*use another --work-dir"):
        train_prior.main([*common, "--cross-attention-levels", "3"])


@pytest.mark.slow
def test_init_from_an_exported_prior_starts_from_its_weights(tmp_path):
    common = ["--batch-size", "2", "--dataset-size", "16", "--steps", "2"]
    # A large learning rate, so the first export differs clearly from the seed's initial weights.
    train_prior.main(["--work-dir", str(tmp_path / "first"), "--export-dir", str(tmp_path / "first/export"), *common, "--lr", "0.05", "--warmup-steps", "1"])
    # Learning rate 0: the fine-tune cannot move the weights, so its export must equal its start.
    tuned = ["--work-dir", str(tmp_path / "tuned"), "--export-dir", str(tmp_path / "tuned/export"), *common, "--lr", "0"]
    train_prior.main([*tuned, "--init-from", str(tmp_path / "first/export")])
    for part in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        first, fine_tuned = load_file(tmp_path / "first/export" / part), load_file(tmp_path / "tuned/export" / part)
        assert first.keys() == fine_tuned.keys()
        assert all(torch.equal(first[key], fine_tuned[key]) for key in first), part
    history = json.loads((tmp_path / "tuned/export/provenance.json").read_text())["history"]
    assert len(history) == 3 and "first" in history[0] and "fine-tuned" in history[1] and "--init-from" in history[2]
    with pytest.raises(SystemExit, match="architecture"):
        train_prior.main([*tuned, "--work-dir", str(tmp_path / "other"), "--init-from", str(tmp_path / "first/export"), "--attention-heads", "2"])


@pytest.mark.slow
def test_freeze_text_encoder_trains_the_unet_only(tmp_path):
    common = ["--batch-size", "2", "--dataset-size", "16", "--steps", "2", "--warmup-steps", "1"]
    train_prior.main(["--work-dir", str(tmp_path / "first"), "--export-dir", str(tmp_path / "first/export"), *common])
    tuned = ["--work-dir", str(tmp_path / "tuned"), "--export-dir", str(tmp_path / "tuned/export"), *common, "--lr", "0.05"]
    train_prior.main([*tuned, "--init-from", str(tmp_path / "first/export"), "--freeze-text-encoder"])
    for part, should_move in (("unet/diffusion_pytorch_model.safetensors", True), ("text_encoder/model.safetensors", False)):
        first, fine_tuned = load_file(tmp_path / "first/export" / part), load_file(tmp_path / "tuned/export" / part)
        moved = any(not torch.equal(first[key], fine_tuned[key]) for key in first)
        assert moved == should_move, part


@pytest.mark.slow
def test_architecture_flags_shape_the_exported_prior(tmp_path):
    common = ["--work-dir", str(tmp_path), "--export-dir", str(tmp_path / "export"), "--steps", "1", "--batch-size", "2", "--dataset-size", "16"]
    train_prior.main([*common, "--block-channels", "16,16,32,32", "--layers-per-block", "2", "--attention-heads", "1"])
    config = json.loads((tmp_path / "export/unet/config.json").read_text())
    assert config["block_out_channels"] == [16, 16, 32, 32] and config["layers_per_block"] == 2
    provenance = json.loads((tmp_path / "export/provenance.json").read_text())
    assert provenance["architecture"]["block_channels"] == [16, 16, 32, 32]
    with pytest.raises(ValueError, match=r"one head count per level of block_channels=\(16, 32\)"):
        train_prior.main([*common, "--work-dir", str(tmp_path / "other"), "--block-channels", "16,32"])


def test_rendering_in_worker_processes_gives_the_same_images():
    serial = render_set(7, 16, seed=3, chunk=3)
    parallel = render_set(7, 16, seed=3, chunk=3, workers=2)
    for name in ("images", "colour", "object", "view"):
        assert torch.equal(getattr(serial, name), getattr(parallel, name)), name
    assert serial.images.float().std() > 0  # objects were drawn, not blank frames


def test_a_checkpoint_of_other_weights_or_other_optimiser_groups_is_refused_in_one_line(tmp_path):
    def run(modules: dict, groups: list) -> TrainingRun:
        return TrainingRun(tmp_path / "checkpoint.pt", modules, torch.optim.AdamW(groups), torch.Generator().manual_seed(0), {"width": 2}, torch.device("cpu"))

    first, second = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    run({"a": first}, [{"params": first.parameters()}]).save()
    assert run({"a": first}, [{"params": first.parameters()}]).restore()
    with pytest.raises(SystemExit, match="optimised in 1 parameter group\\(s\\), this version of the script uses 2"):
        run({"a": first}, [{"params": [first.weight]}, {"params": [first.bias]}]).restore()
    with pytest.raises(SystemExit, match="trained 2 weight tensors, this command trains 4"):
        run({"a": first, "b": second}, [{"params": [*first.parameters(), *second.parameters()]}]).restore()
    torch.save({"unet": first.state_dict(), "step": torch.tensor(3)}, tmp_path / "checkpoint.pt")  # as the first sessions wrote them
    with pytest.raises(SystemExit, match=r"records no architecture\): use another --work-dir"):
        run({"a": first}, [{"params": first.parameters()}]).restore()


def test_the_training_loop_checkpoints_stops_and_says_when_the_run_is_done(tmp_path, monkeypatch):
    layer = torch.nn.Linear(2, 1)
    run = TrainingRun(tmp_path / "checkpoint.pt", {"layer": layer}, torch.optim.SGD(layer.parameters(), lr=0.1), torch.Generator().manual_seed(0), {"width": 2}, torch.device("cpu"))
    saved_at: list[int] = []
    monkeypatch.setattr(run, "save", lambda: saved_at.append(run.step))

    def step() -> dict[str, torch.Tensor]:
        loss = layer(torch.ones(1, 2)).square().sum()
        run.optimise(loss, 0.9)
        return {"loss": loss}

    assert not run.train(step, 7, "toy", stop_at_step=5, checkpoint_every=2)
    assert run.step == 5 and saved_at == [2, 4, 5]  # every 2 steps, and where it stopped
    assert run.train(step, 7, "toy", checkpoint_every=2)
    assert run.step == 7 and saved_at[3:] == [6, 7]
    assert not run.train(step, 9, "toy", time_limit_minutes=0.0)  # stops before a step, with a checkpoint
    assert run.step == 7 and saved_at[-1] == 7
