from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import clearclass
from clearclass.errors import DataError
from clearclass.predict import image_files
from tests.conftest import COLOURS, make_photo


def test_load_and_predict_a_path_an_image_and_an_array(trained_run, tmp_path):
    classifier = clearclass.load(trained_run / "model")
    assert classifier.classes == ["blue", "green", "red"]
    path = make_photo(tmp_path / "red.jpg", COLOURS["red"], size=(64, 50), seed=999)
    by_path = classifier.predict(path, top_k=2)
    assert by_path.label == "red" and by_path.class_id == "red"
    assert len(by_path.top_k) == 2
    assert by_path.top_k[0]["probability"] == by_path.probability
    assert by_path.top_k[0]["probability"] >= by_path.top_k[1]["probability"]
    pil = Image.open(path)
    assert classifier.predict(pil).probability == pytest.approx(by_path.probability, abs=1e-6)
    array = np.asarray(pil.convert("RGB"))
    assert classifier.predict(array).label == "red"


def test_a_run_folder_is_accepted_as_the_model(trained_run):
    assert clearclass.load(trained_run).classes == ["blue", "green", "red"]


def test_probabilities_sum_to_one(trained_run, tmp_path):
    classifier = clearclass.load(trained_run / "model")
    photos = [make_photo(tmp_path / f"{c}.png", rgb, seed=5) for c, rgb in COLOURS.items()]
    probs = classifier.predict_proba(photos)
    assert probs.shape == (3, 3)
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert [classifier.classes[i] for i in probs.argmax(1)] == list(COLOURS)


def test_unreadable_and_missing_photos_are_clear_errors(trained_run, tmp_path):
    classifier = clearclass.load(trained_run / "model")
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    with pytest.raises(DataError, match="Cannot read .*bad.jpg"):
        classifier.predict(bad)
    with pytest.raises(DataError, match="does not exist"):
        classifier.predict(tmp_path / "missing.jpg")
    with pytest.raises(DataError, match="uint8"):
        classifier.predict(np.zeros((4, 4), dtype=np.float32))


def test_image_files_expands_folders(tmp_path):
    a = make_photo(tmp_path / "photos" / "a.jpg")
    b = make_photo(tmp_path / "photos" / "sub" / "b.png")
    (tmp_path / "photos" / "notes.txt").write_text("x")
    assert image_files([tmp_path / "photos"]) == [a, b]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="No images"):
        image_files([tmp_path / "empty"])
    with pytest.raises(DataError, match="does not exist"):
        image_files([tmp_path / "missing.jpg"])
