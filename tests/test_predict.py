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


def test_onnx_backend_agrees_with_torch_and_needs_no_torch(trained_run, tmp_path):
    import shutil
    import subprocess
    import sys

    from clearclass.export import export_onnx

    folder = shutil.copytree(trained_run / "model", tmp_path / "model")
    if not (folder / "model.onnx").exists():
        export_onnx(folder)
    photos = [make_photo(tmp_path / f"{c}.png", rgb, seed=11) for c, rgb in COLOURS.items()]
    onnx = clearclass.load(folder)
    torch_backend = clearclass.load(folder, backend="torch")
    assert (onnx.backend, torch_backend.backend) == ("onnx", "torch")
    assert np.abs(onnx.predict_proba(photos) - torch_backend.predict_proba(photos)).max() < 1e-4

    script = (
        "import sys, clearclass\n"
        f"c = clearclass.load({str(folder)!r})\n"
        f"print(c.backend, c.predict({str(photos[0])!r}).label)\n"
        "assert 'torch' not in sys.modules and 'timm' not in sys.modules, 'torch imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["onnx", "red"]


def test_unknown_backend_and_missing_onnx_are_clear_errors(trained_run, tmp_path):
    import shutil

    from clearclass.errors import ClearclassError

    folder = shutil.copytree(trained_run / "model", tmp_path / "model")
    (folder / "model.onnx").unlink(missing_ok=True)
    with pytest.raises(ClearclassError, match="backend must be one of"):
        clearclass.load(folder, backend="tensorrt")
    with pytest.raises(ClearclassError, match="clearclass export"):
        clearclass.load(folder, backend="onnx")
    assert clearclass.load(folder).backend == "torch"
