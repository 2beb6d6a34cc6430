"""The bundled prior's domain-adapter training (scripts/train_prior_adapter.py): exact resume, and an
export that is the base prior as it was plus the adapter and the domain's words."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import train_prior_adapter  # noqa: E402

from bundled.prior.model import build_tokenizer  # noqa: E402
from bundled.prior.sampling import load_prior, sample_images  # noqa: E402
from bundled.prior.weights import BUNDLED_PRIOR_DIR, save_prior  # noqa: E402

TINY = ["--batch-size", "2", "--dataset-size", "8", "--steps", "3", "--warmup-steps", "1", "--rank", "2", "--render-workers", "1", "--checkpoint-minutes", "1000", "--lr", "0.01"]


@pytest.mark.slow
def test_an_interrupted_adapter_training_resumes_exactly(tmp_path, tiny_pixel_prior):
    train_prior_adapter.main(["--base", str(tiny_pixel_prior), "--work-dir", str(tmp_path / "straight"), "--export-dir", str(tmp_path / "straight/export"), *TINY])
    stopped = ["--base", str(tiny_pixel_prior), "--work-dir", str(tmp_path / "stopped"), "--export-dir", str(tmp_path / "stopped/export"), *TINY]
    train_prior_adapter.main([*stopped, "--stop-at-step", "1"])
    assert not (tmp_path / "stopped/export").exists()
    train_prior_adapter.main(stopped)
    for part in ("adapters/normal_map/adapter_model.safetensors", "text_encoder/model.safetensors"):
        straight, resumed = load_file(tmp_path / "straight/export" / part), load_file(tmp_path / "stopped/export" / part)
        assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight), part
    history = json.loads((tmp_path / "stopped/export/provenance.json").read_text())["adapters"]["normal_map"]["history"]
    assert "adapter for the prior" in history[0] and "--stop-at-step" in history[1] and "--stop-at-step" not in history[2]


@pytest.fixture(scope="module")
def base_without_the_words(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped prior as it was before its adapter: no adapters/, and a vocabulary without
    "normal" and "map" (their embedding rows cut off)."""
    folder = tmp_path_factory.mktemp("base") / "prior"
    shipped = load_prior(BUNDLED_PRIOR_DIR)
    tokenizer = build_tokenizer(normal_map_words=False)
    shipped.text_encoder.resize_token_embeddings(len(tokenizer))
    save_prior(folder, shipped.unet, shipped.text_encoder, tokenizer, shipped.scheduler, {"test": True})
    return folder


@pytest.mark.slow
def test_a_prior_gains_an_adapter_and_its_words_and_keeps_the_rest(tmp_path, base_without_the_words):
    base, export = base_without_the_words, tmp_path / "export"
    train_prior_adapter.main(["--base", str(base), "--work-dir", str(tmp_path), "--export-dir", str(export), *TINY])
    assert (export / "unet/diffusion_pytorch_model.safetensors").read_bytes() == (base / "unet/diffusion_pytorch_model.safetensors").read_bytes()
    assert json.loads((export / "adapters/normal_map/domain.json").read_text()) == {"caption_prefix": "a normal map of"}
    before, after = load_prior(base), load_prior(export)
    old_rows = before.text_encoder.get_input_embeddings().weight
    new_rows = after.text_encoder.get_input_embeddings().weight
    assert torch.equal(new_rows[: len(old_rows)], old_rows) and len(new_rows) == len(after.tokenizer) > len(old_rows)
    assert "normal" in after.tokenizer.get_vocab() and "normal" not in before.tokenizer.get_vocab()
    prompts = ["a red cube, front view", "a normal map of a cube"]
    # One prompt a batch both times (a batch's composition moves float results in the last bits).
    plain = sample_images(before, prompts, torch.Generator().manual_seed(0), steps=2, batch_size=1)
    adapted = sample_images(after, prompts, torch.Generator().manual_seed(0), steps=2, batch_size=1)
    assert torch.equal(plain[0], adapted[0]) and not torch.equal(plain[1], adapted[1])
    with pytest.raises(SystemExit):  # the export already has the domain's adapter
        train_prior_adapter.main(["--base", str(export), "--work-dir", str(tmp_path / "again")])


def test_the_shipped_prior_runs_its_normal_map_adapter_for_normal_map_captions_only():
    shipped = load_prior(BUNDLED_PRIOR_DIR)
    assert [adapter.name for adapter in shipped.domain_adapters.adapters] == ["normal_map"]
    assert shipped.domain_adapters.domain_of("a normal map of a red cube, front view").name == "normal_map"
    assert shipped.domain_adapters.domain_of("a red cube, front view") is None
