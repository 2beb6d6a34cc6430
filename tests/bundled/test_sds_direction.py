"""The SDS-direction probe: an oracle prior that denoises to the prompted object scores +1, one
that denoises away from it -1, a real (tiny) prior something in between; bad input is named."""

import functools
import json

import pytest
import torch

from bundled.evaluation.sds_direction import sds_direction
from bundled.world.objects import OBJECTS
from bundled.world.render import render_object
from framework.guidance.pixel import PixelDiffusionGuidance
from scripts.sds_direction import main


def _guidance(prior) -> PixelDiffusionGuidance:
    return PixelDiffusionGuidance(str(prior), text_attention_mask=False, guidance_scale=5.0, embedding_cache_dir=None, device="cpu")


@pytest.mark.parametrize("away, expected", [(False, 1.0), (True, -1.0)])
def test_an_oracle_that_denoises_to_the_prompted_object_points_straight_at_it(tiny_pixel_prior, monkeypatch, away, expected):
    guidance = _guidance(tiny_pixel_prior)

    def oracle(noisy, timesteps, condition, guidance_scale=None):
        cameras = condition.cameras
        alpha_bar = guidance.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
        goal, source = (guidance.encode_images(render_object(OBJECTS[name], "yellow", cameras)[0].permute(0, 3, 1, 2)) for name in ("cone", "cylinder"))
        x0_hat = 2 * source - goal if away else goal
        return (noisy - alpha_bar.sqrt() * x0_hat) / (1 - alpha_bar).sqrt()

    monkeypatch.setattr(guidance, "guided_noise", oracle)
    cosines = sds_direction(guidance, "a yellow cone", "cylinder", [0.3, 0.9], n_views=2, n_noise=1, resolution=32)
    assert cosines == pytest.approx([expected, expected], abs=1e-4)


def test_a_real_prior_gives_one_finite_cosine_per_timestep_between_the_oracles(tiny_pixel_prior):
    probe = functools.partial(sds_direction, _guidance(tiny_pixel_prior), "a yellow cone", "cylinder", [0.2, 0.5, 0.95], n_views=2, n_noise=1, resolution=32)
    cosines = probe()
    assert len(cosines) == 3
    assert torch.isfinite(torch.tensor(cosines)).all()
    # an untrained prior neither points at the prompted object nor away from it (the oracles' +1 / -1),
    # and each timestep is measured at its own noise level
    assert all(abs(c) < 0.5 for c in cosines)
    assert len(set(cosines)) == 3
    # the seed fixes the cameras and the noise draws: the same seed measures the same, another does not
    assert probe() == cosines
    assert probe(seed=1) != cosines


@pytest.mark.parametrize("source, timesteps, named", [("cone", [0.5], "source='cone'"), ("teapot", [0.5], "teapot"), ("cylinder", [1.0], "timesteps")])
def test_bad_input_is_named(tiny_pixel_prior, source, timesteps, named):
    with pytest.raises(ValueError, match=named):
        sds_direction(_guidance(tiny_pixel_prior), "a yellow cone", source, timesteps, n_views=1)


@pytest.mark.parametrize("estimator", ["sds", "ism"])
def test_script_prints_a_cosine_per_timestep_as_json(tiny_pixel_prior, capsys, estimator):
    main(["--prior", str(tiny_pixel_prior), "--prompt", "a red cube", "--source", "sphere", "--timesteps", "0.3", "0.7", "--views", "2", "--estimator", estimator])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(result) == ["0.3", "0.7"]
