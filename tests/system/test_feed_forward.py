"""Feed-forward mode: a method that does not optimise is built, predicts from the reference image
and writes the same exports, turntable and run.json, without `fit`."""

from __future__ import annotations

import json

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

from framework.export.gaussian_ply import read_gaussian_ply
from framework.launch import run
from framework.representations.encodings import TriplaneEncoding
from framework.representations.gaussians import GaussianModel
from framework.utils.run_record import RunRecord
from tests.helpers import compose_config


def test_representations_have_public_constructors_from_tensors():
    means = torch.rand(5, 3)
    gaussians = GaussianModel.from_tensors({"means": means, "scales": torch.zeros(5, 3), "quats": torch.rand(5, 4), "opacities": torch.zeros(5), "sh0": torch.zeros(5, 1, 3)})
    assert gaussians.num_gaussians == 5 and torch.equal(gaussians.means, means) and gaussians.params["shN"].shape == (5, 0, 3)
    planes = torch.randn(3, 4, 8, 8)
    encoding = TriplaneEncoding.from_planes(planes)
    assert torch.equal(encoding.planes, planes) and encoding.out_dim == 12
    state = torch.get_rng_state()
    TriplaneEncoding.from_planes(planes)
    assert torch.equal(torch.get_rng_state(), state), "building from tensors leaves the global RNG alone"


def test_a_feed_forward_method_predicts_and_exports_without_fit(tmp_path, monkeypatch):
    image = np.full((32, 32, 4), 0, dtype=np.uint8)
    image[8:24, 8:24] = (220, 30, 30, 255)
    Image.fromarray(image, "RGBA").save(tmp_path / "red.png")
    run_dir = tmp_path / "run"
    cfg = compose_config([
        "experiment=dreamfusion", "renderer=gaussian", f"image={tmp_path / 'red.png'}", f"run_dir={run_dir}", "logger=csv", "~callbacks.progress",
        "camera.eval_resolution=32", "camera.n_turntable_frames=8", "camera.reference_resolution=32",
    ])
    cfg.guidance = None  # a feed-forward method has no guidance
    cfg.system = OmegaConf.create({
        "_target_": "framework.system.GenerationSystem",
        "representations": {},
        "renderers": {"main": OmegaConf.to_container(cfg.renderer)},
        "materials": {"main": {"_target_": "framework.representations.materials.DiffuseMaterial"}},
        "background": {"_target_": "framework.representations.background.SolidBackground"},
        "stages": {},
        "reconstructor": {"_target_": "tests.toys.MeanColourGaussians", "n": 64},
        "save_dir": str(run_dir / "save"),
    })
    cfg.callbacks.export.exporters = {"gaussians": {"_target_": "framework.export.exporters.GaussianPly", "export_dir": str(run_dir / "export")}}
    monkeypatch.setattr("pytorch_lightning.Trainer.fit", lambda *args, **kwargs: (_ for _ in ()).throw(AssertionError("fit was called")))
    record = RunRecord(run_dir, ["image=red.png"], None)
    assert run(cfg, record) == run_dir
    record.finish("completed")
    params = read_gaussian_ply(run_dir / "export/gaussians.ply")
    assert params["means"].shape == (64, 3)
    colour = 0.5 + 0.28209479177387814 * params["sh0"][0, 0]
    torch.testing.assert_close(colour, torch.tensor([220, 30, 30]) / 255.0, atol=1e-3, rtol=0)
    assert (run_dir / "save/turntable.mp4").is_file()
    written = json.loads((run_dir / "run.json").read_text())
    assert written["status"] == "completed" and "export/gaussians.ply" in written["exports"] and "save/turntable.mp4" in written["exports"]
