"""scripts/average_priors.py: the weighted mean of prior folders, written in their layout."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import average_priors  # noqa: E402

from bundled.prior.model import build_scheduler, build_text_encoder, build_tokenizer, build_unet  # noqa: E402
from bundled.prior.sampling import load_prior  # noqa: E402
from bundled.prior.weights import save_prior  # noqa: E402
from tests.conftest import TINY_PIXEL  # noqa: E402


def _prior(folder: Path, seed: int, provenance: dict) -> Path:
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    save_prior(folder, build_unet(TINY_PIXEL), build_text_encoder(TINY_PIXEL, len(tokenizer)), tokenizer, build_scheduler(), provenance)
    return folder


def test_the_average_is_the_weighted_mean_and_keeps_every_history(tmp_path):
    first = _prior(tmp_path / "a", 0, {"command": "train a", "history": ["train a"], "architecture": {"width": 8}})
    second = _prior(tmp_path / "b", 1, {"command": "train b", "history": ["train a", "(then)", "train b"], "architecture": {"width": 8}})
    average_priors.main([str(first), str(second), "--out", str(tmp_path / "soup"), "--weights", "0.25", "0.75"])
    a, b, soup = (load_prior(tmp_path / name) for name in ("a", "b", "soup"))
    for module in ("unet", "text_encoder"):
        sa, sb, ss = (getattr(p, module).state_dict() for p in (a, b, soup))
        for key in ss:  # stored fp16: the mean of two fp16 values, rounded once
            assert torch.allclose(ss[key], (0.25 * sa[key] + 0.75 * sb[key]).half().float(), atol=1e-3, rtol=0), key
    provenance = json.loads((tmp_path / "soup" / "provenance.json").read_text())
    assert provenance["history"][:3] == ["train a", "(then)", "train b"] and "average_priors.py" in provenance["history"][-1]
    assert [entry["weight"] for entry in provenance["averaged"]] == [0.25, 0.75]


def test_bad_inputs_exit_2_naming_them(tmp_path, capsys):
    first = _prior(tmp_path / "a", 0, {"command": "train a", "architecture": {"width": 8}})
    for argv, named in (([str(first)], "give at least two"), ([str(first), str(first), "--weights", "0.9", "0.9"], "--weights [0.9, 0.9]"), ([str(first), str(tmp_path)], f"prior {tmp_path}: no provenance.json")):
        with pytest.raises(SystemExit) as exit_info:
            average_priors.parse_args([*argv, "--out", str(tmp_path / "soup")])
        assert exit_info.value.code == 2 and named in capsys.readouterr().err
    other = _prior(tmp_path / "c", 0, {"command": "train c", "architecture": {"width": 16}})
    with pytest.raises(SystemExit, match="different architectures"):
        average_priors.main([str(first), str(other), "--out", str(tmp_path / "soup")])
    assert not (tmp_path / "soup").exists()
