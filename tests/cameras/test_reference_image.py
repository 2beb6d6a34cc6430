"""Reference images as users give them: alpha or a plain backdrop, odd file modes, framing, and
one-line errors for images that cannot be used."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from framework.cameras.reference_image import prepare_reference_image


def _square_object(size: int = 64, box: tuple[int, int, int, int] = (20, 44, 20, 44), colour=(200, 30, 30), backdrop=(255, 255, 255)) -> np.ndarray:
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[:] = backdrop
    top, bottom, left, right = box
    image[top:bottom, left:right] = colour
    return image


def test_an_image_framed_like_the_worlds_renders_is_kept_as_is(tmp_path):
    Image.fromarray(_square_object()).save(tmp_path / "framed.png")
    prepared = prepare_reference_image(tmp_path / "framed.png", 64)
    assert prepared.mask[0, :, :, 0].gt(0.5).sum() == 24 * 24
    assert not any("recentred" in note for note in prepared.notes)
    torch.testing.assert_close(prepared.image[0, 30, 30], torch.tensor([200, 30, 30]) / 255.0)


def test_an_off_centre_or_tiny_object_is_recentred_and_rescaled(tmp_path):
    Image.fromarray(_square_object(box=(2, 12, 40, 50))).save(tmp_path / "corner.png")
    prepared = prepare_reference_image(tmp_path / "corner.png", 100, fill=0.6)
    rows, cols = torch.nonzero(prepared.mask[0, :, :, 0] > 0.5, as_tuple=True)
    assert abs((rows.max() - rows.min() + 1) - 60) <= 2 and abs((cols.max() - cols.min() + 1) - 60) <= 2
    assert abs((rows.max() + rows.min()) / 2 - 49.5) <= 1.5 and abs((cols.max() + cols.min()) / 2 - 49.5) <= 1.5
    assert any("recentred" in note for note in prepared.notes)
    kept = prepare_reference_image(tmp_path / "corner.png", 64, framing="keep")
    assert kept.mask[0, :, :, 0].gt(0.5).sum() == 100


def test_rgb_on_a_plain_grey_backdrop_is_cut_out_and_put_on_white(tmp_path):
    Image.fromarray(_square_object(backdrop=(120, 120, 120), colour=(20, 60, 220))).save(tmp_path / "grey.png")
    prepared = prepare_reference_image(tmp_path / "grey.png", 64)
    assert prepared.mask[0, :, :, 0].gt(0.5).sum() == 24 * 24
    assert torch.equal(prepared.image[0, 0, 0], torch.ones(3))
    assert any("background colour" in note for note in prepared.notes)


def test_palette_and_16_bit_files_are_read(tmp_path):
    Image.fromarray(_square_object()).convert("P").save(tmp_path / "palette.png")
    assert prepare_reference_image(tmp_path / "palette.png", 32).mask.sum() > 0
    grey = np.full((64, 64), 65535, dtype=np.uint16)
    grey[20:44, 20:44] = 8000
    Image.fromarray(grey).save(tmp_path / "deep.png")
    prepared = prepare_reference_image(tmp_path / "deep.png", 64)
    assert prepared.mask[0, :, :, 0].gt(0.5).sum() == 24 * 24
    torch.testing.assert_close(prepared.image[0, 30, 30], torch.full((3,), 8000 / 65535), atol=1e-3, rtol=0)


def test_unusable_images_get_one_line_errors(tmp_path):
    Image.fromarray(np.full((64, 64, 3), 255, dtype=np.uint8)).save(tmp_path / "blank.png")
    with pytest.raises(ValueError, match="blank.png' has no foreground"):
        prepare_reference_image(tmp_path / "blank.png", 64)
    transparent = np.zeros((64, 64, 4), dtype=np.uint8)
    Image.fromarray(transparent, "RGBA").save(tmp_path / "clear.png")
    with pytest.raises(ValueError, match="clear.png' has no foreground"):
        prepare_reference_image(tmp_path / "clear.png", 64)
    Image.fromarray(_square_object(size=8, box=(2, 6, 2, 6))).save(tmp_path / "tiny.png")
    with pytest.raises(ValueError, match="tiny.png' is 8x8 px: too small"):
        prepare_reference_image(tmp_path / "tiny.png", 64)
    with pytest.raises(ValueError, match="framing='crop'"):
        prepare_reference_image(tmp_path / "tiny.png", 64, framing="crop")
