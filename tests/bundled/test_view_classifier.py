"""The front/back judge of the prior evaluation: augmentation, saving and loading, the shipped
weights, and that training on references reads views it has not seen (between the reference views,
shifted, mirrored)."""

from __future__ import annotations

import pytest
import torch

from bundled.evaluation.prior import ReferenceGrid, build_references, train_view_classifier
from bundled.evaluation.view_classifier import FrontBackClassifier, augment, train_front_back_classifier
from bundled.world.objects import OBJECTS
from bundled.world.render import render_object
from framework.cameras.camera import CameraBatch
from framework.guidance.prompts import VIEWS

FRONT, BACK = VIEWS.index("front"), VIEWS.index("back")


def test_augment_is_seeded_keeps_range_and_white_background():
    images = torch.ones(4, 3, 16, 16)
    images[:, :, 6:10, 6:10] = 0.2
    first = augment(images, torch.Generator().manual_seed(0))
    again = augment(images, torch.Generator().manual_seed(0))
    other = augment(images, torch.Generator().manual_seed(1))
    assert first.shape == images.shape and torch.equal(first, again) and not torch.equal(first, other)
    assert first.min() >= 0.0 and first.max() <= 1.0
    assert first[:, :, 0, 0].mean() > 0.8  # corners stay (noisy) background
    assert first[:, :, 8, 8].mean() < 0.5  # the dark square stays, give or take a shift


def test_training_checks_its_inputs():
    one = torch.zeros(2, 8, 8, 3)
    with pytest.raises(ValueError, match="front and back renders"):
        train_front_back_classifier([one], [], ["mug"])
    with pytest.raises(ValueError, match="steps=0"):
        train_front_back_classifier([one], [one], ["mug"], steps=0)
    classifier = train_front_back_classifier([one], [one + 1.0], ["mug"], steps=2)
    with pytest.raises(ValueError, match="'cube'"):
        classifier.classify(torch.zeros(1, 8, 8, 3), ["cube"])
    with pytest.raises(ValueError, match="2 object names"):
        classifier.classify(torch.zeros(1, 8, 8, 3), ["mug", "mug"])


def test_save_and_load_round_trip(tmp_path):
    front, back = torch.zeros(3, 8, 8, 3), torch.ones(3, 8, 8, 3)
    classifier = train_front_back_classifier([front, back], [back, front], ["mug", "house"], steps=3, members=2)
    path = tmp_path / "judge.safetensors"
    classifier.save(path, {"command": "test"})
    loaded = FrontBackClassifier.load(path)
    images = torch.rand(6, 8, 8, 3)
    names = ["mug", "house"] * 3
    assert loaded.objects == ("mug", "house") and len(loaded.nets) == 2
    assert torch.equal(loaded.classify(images, names), classifier.classify(images, names))
    with pytest.raises(FileNotFoundError, match="train_view_classifier"):
        FrontBackClassifier.load(tmp_path / "missing.safetensors")


def _renders(name: str, colour: str, azimuths: list[float], elevation: float = 20.0, distance: float = 2.75) -> torch.Tensor:
    n = len(azimuths)
    cameras = CameraBatch.from_orbit(
        torch.full((n,), elevation), torch.tensor(azimuths), torch.full((n,), distance), torch.full((n,), 42.5), 32
    )
    return render_object(OBJECTS[name], colour, cameras)[0]


@pytest.mark.slow
def test_classifier_reads_unseen_views_and_the_mirror_of_the_mug():
    """Trained on a coarse grid, it must class views between the grid's views, the mug's mirror
    image (handle on the other side: what its back looks like) and a shifted house. (The snowman's
    small face needs the full grid and steps: seeds 0-4 all pass this for the mug and the house,
    one of three failed it for the snowman. The shipped judge's snowman is checked below.)"""
    objects = ("mug", "house")
    grid = ReferenceGrid(elevations_deg=(0.0, 30.0, 55.0), n_azimuths=8, distances=(2.6, 3.0))
    classifier = train_view_classifier(build_references(objects, ("red", "green"), grid), steps=400)
    azimuths = [-30.0, -10.0, 15.0, 35.0, 150.0, 170.0, -165.0, -140.0]
    truth = torch.tensor([FRONT] * 4 + [BACK] * 4)
    for name in objects:
        images = _renders(name, "green", azimuths)
        assert (classifier.classify(images, [name] * len(azimuths)) == truth).float().mean() >= 0.85, name
    mug_front = _renders("mug", "red", [-10.0, 0.0, 10.0])
    assert classifier.classify(mug_front.flip(2), ["mug"] * 3).tolist() == [BACK] * 3
    house_front = _renders("house", "red", [0.0, 20.0])
    shifted = torch.ones_like(house_front)
    shifted[:, 2:, 2:] = house_front[:, :-2, :-2]
    assert classifier.classify(shifted, ["house"] * 2).tolist() == [FRONT] * 2


def test_shipped_classifier_reads_clear_front_and_back_views():
    classifier = FrontBackClassifier.load()
    assert set(classifier.objects) == {name for name, obj in OBJECTS.items() if obj.has_front}
    azimuths = [-20.0, 0.0, 25.0, 160.0, 180.0, -155.0]
    truth = [FRONT] * 3 + [BACK] * 3
    for name in classifier.objects:
        assert classifier.classify(_renders(name, "orange", azimuths), [name] * 6).tolist() == truth, name
