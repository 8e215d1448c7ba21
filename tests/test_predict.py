from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
from PIL import Image

import clearclass
from clearclass.bundle import read_info, sha256
from clearclass.errors import DataError, ModelFileError, SettingError
from clearclass.export import export_onnx
from clearclass.predict import image_files
from tests.conftest import COLOURS, make_photo


def test_load_and_predict_a_path_an_image_and_an_array(trained_run, tmp_path):
    classifier = clearclass.load(trained_run / "model")
    assert classifier.classes == ["blue", "green", "red"]
    path = make_photo(tmp_path / "red.jpg", COLOURS["red"], size=(64, 50), seed=999)
    by_path = classifier.predict(path, top_k=2)
    assert by_path.class_name == by_path.label == "red" and by_path.class_id == "red"
    assert len(by_path.top_k) == 2
    assert by_path.top_k[0]["probability"] == by_path.probability
    assert by_path.top_k[0]["probability"] >= by_path.top_k[1]["probability"]
    pil = Image.open(path)
    assert classifier.predict(pil).probability == pytest.approx(by_path.probability, abs=1e-6)
    array = np.asarray(pil.convert("RGB"))
    assert classifier.predict(array).class_name == "red"


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
    with pytest.raises(DataError, match="bad.jpg: cannot be read as an image"):
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
        f"print(c.backend, c.predict({str(photos[0])!r}).class_name)\n"
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


def test_predict_many_reports_each_unreadable_input_and_predicts_the_rest(trained_run, tmp_path):
    classifier = clearclass.load(trained_run / "model")
    red = make_photo(tmp_path / "red.jpg", COLOURS["red"], seed=3)
    blue = make_photo(tmp_path / "blue.png", COLOURS["blue"], seed=4)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a photo")
    (tmp_path / "empty").mkdir()
    images = [red, bad, tmp_path / "missing.jpg", blue, np.zeros((4, 4), np.float32),
              tmp_path / "empty", red]
    results = classifier.predict_many(images, top_k=2, batch_size=2, unreadable="report")
    assert [r.image for r in results] == [str(red), str(bad), str(tmp_path / "missing.jpg"),
                                          str(blue), "<ndarray>", str(tmp_path / "empty"),
                                          str(red)]
    errors = [r.error for r in results]
    assert errors[0] is errors[3] is errors[6] is None
    assert "cannot be read as an image" in errors[1]
    assert errors[2] == "does not exist"
    assert "uint8" in errors[4]
    assert errors[5] == "is a folder with no images in it"
    for r in (results[1], results[2]):
        assert (r.class_name, r.class_id, r.top_k) == ("", "", []) and np.isnan(r.probability)
        assert r.to_dict() == {"image": r.image, "error": r.error}
        assert r.error in r._repr_html_() and r._repr_png_() is None
    # The good photos are predicted as they are alone, whatever batch they fell in.
    alone = classifier.predict_many([red, blue], top_k=2)
    assert [r.to_dict() for r in (results[0], results[3])] == [a.to_dict() for a in alone]
    assert results[6].to_dict() == alone[0].to_dict()
    assert set(results[0].to_dict()) == {"image", "label", "class_id", "probability", "top_k"}
    # The default still stops at the first unreadable photo.
    with pytest.raises(DataError, match="bad.jpg: cannot be read"):
        classifier.predict_many(images)
    with pytest.raises(SettingError, match="unreadable must be one of raise, report"):
        classifier.predict_many(images, unreadable="skip")


def test_image_files_can_keep_missing_paths_and_empty_folders_for_reporting(tmp_path):
    a = make_photo(tmp_path / "photos" / "a.jpg")
    (tmp_path / "empty").mkdir()
    inputs = [tmp_path / "missing.jpg", tmp_path / "photos", tmp_path / "empty"]
    assert image_files(inputs, unreadable="report") == [
        tmp_path / "missing.jpg", a, tmp_path / "empty"]


@pytest.fixture
def exported(trained_run, tmp_path):
    """A copy of the trained bundle with model.onnx, as `clearclass export` writes it."""
    folder = shutil.copytree(trained_run / "model", tmp_path / "exported")
    export_onnx(folder)
    return folder


def test_export_records_the_onnx_checksum_in_model_json(exported):
    data = json.loads((exported / "model.json").read_text())
    assert data["onnx"] == {"file": "model.onnx", "sha256": sha256(exported / "model.onnx")}
    assert read_info(exported).checksums["model.onnx"] == data["onnx"]["sha256"]
    assert clearclass.load(exported).backend == "onnx"


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "random bytes, no checksum"])
def test_a_damaged_onnx_file_falls_back_to_pytorch_with_a_warning(exported, tmp_path, damage,
                                                                  caplog):
    onnx = exported / "model.onnx"
    photo = make_photo(tmp_path / "red.jpg", COLOURS["red"], seed=8)
    expected = clearclass.load(exported).predict(photo).to_dict()
    if damage == "truncated":
        onnx.write_bytes(onnx.read_bytes()[:2000])
    else:
        onnx.write_bytes(np.random.default_rng(0).bytes(4000))
    if damage.endswith("no checksum"):  # a bundle exported before the checksum was recorded
        data = json.loads((exported / "model.json").read_text())
        del data["onnx"]
        (exported / "model.json").write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="clearclass"):
        classifier = clearclass.load(exported)
    assert classifier.backend == "torch"
    warning = caplog.records[-1].getMessage()
    assert "model.onnx" in warning and "PyTorch" in warning and "clearclass export" in warning
    got = classifier.predict(photo).to_dict()
    assert got["label"] == expected["label"]
    assert got["probability"] == pytest.approx(expected["probability"], abs=1e-4)
    with pytest.raises(ModelFileError, match="model.onnx.*clearclass export"):
        clearclass.load(exported, backend="onnx")


def test_a_verified_onnx_file_is_used_without_reading_the_weights(exported):
    weights = exported / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert clearclass.load(exported).backend == "onnx"
    with pytest.raises(ModelFileError, match="damaged.*Restore it from a copy.*train") as error:
        clearclass.load(exported, backend="torch")
    assert "re-export" not in str(error.value).lower()
    assert "clearclass export" not in str(error.value)


def _edit_model_json(folder, edit):
    data = json.loads((folder / "model.json").read_text())
    edit(data)
    (folder / "model.json").write_text(json.dumps(data))


def _more_classes(data):
    data["classes"].append({"id": "extra", "name": "extra"})
    data["num_classes"] += 1


def _one_class(data):
    data["classes"] = data["classes"][:1]
    data["num_classes"] = 1


@pytest.mark.parametrize(("edit", "count"), [(_more_classes, "4 classes"), (_one_class, "1 class")])
def test_class_count_is_checked_against_the_network(trained_run, exported, tmp_path, edit,
                                                    count):
    plain = shutil.copytree(trained_run / "model", tmp_path / "plain")
    (plain / "model.onnx").unlink(missing_ok=True)
    _edit_model_json(plain, edit)
    with pytest.raises(ModelFileError, match=f"model.json lists {count} but the weights in "
                                             "model.safetensors have 3 outputs"):
        clearclass.load(plain)
    _edit_model_json(exported, edit)
    with pytest.raises(ModelFileError, match=f"model.json lists {count} but model.onnx has 3 "
                                             "outputs"):
        clearclass.load(exported)


@pytest.mark.parametrize(("content", "message"), [
    (b"[1, 2]", "it holds a list"),
    (b"\x89PNG\xff\xfe garbage", "not text"),
    (b"{\"format\": ", "not valid JSON"),
    (b"{}", "'format' is missing"),
])
def test_unreadable_model_json_is_named(trained_run, tmp_path, content, message):
    folder = shutil.copytree(trained_run / "model", tmp_path / "model")
    (folder / "model.json").write_bytes(content)
    with pytest.raises(ModelFileError, match=f"model.json.*{message}"):
        clearclass.load(folder)


def _drop(*keys):
    def edit(data):
        target = data
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]
    return edit


def _set(value, *keys):
    def edit(data):
        target = data
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return edit


@pytest.mark.parametrize(("edit", "message"), [
    (_drop("preprocessing", "size"), "it has no 'preprocessing.size'"),
    (_drop("weights"), "it has no 'weights'"),
    (_set("32", "preprocessing", "size"), "'preprocessing.size' must be a whole number, not "
                                          "the string \"32\""),
    (_set(0, "preprocessing", "size"), "'preprocessing.size' must be 1 to"),
    (_set(True, "num_classes"), "'num_classes' must be a whole number, not true"),
    (_set(5, "num_classes"), "'num_classes' is 5 but 'classes' lists 3"),
    (_set([], "classes"), "'classes' is empty"),
    (_set(["a", "b", "c"], "classes"), "'classes\\[0\\]' must be an object"),
    (_set([{"id": "a", "name": "A"}, {"id": "a", "name": "B"}], "classes"),
     "the class id \"a\" appears twice"),
    (_set([{"id": 1, "name": "A"}], "classes"), "'classes\\[0\\].id' must be a string"),
    (_set("zoom", "preprocessing", "resize_method"),
     "'preprocessing.resize_method' must be one of crop, squish, pad"),
    (_set([0.5, 0.5], "preprocessing", "mean"), "'preprocessing.mean' must be 3 numbers"),
    (_set([0.5, 0, 0.5], "preprocessing", "std"), "'preprocessing.std' must be 3 numbers above 0"),
    (_set("abc", "weights", "sha256"), "'weights.sha256' must be a SHA-256"),
    (_set(0, "format_version"), "'format_version' must be 1 to 2"),
    (_set([], "training"), "'training' must be an object"),
])
def test_each_bad_field_of_model_json_is_named(trained_run, tmp_path, edit, message):
    folder = shutil.copytree(trained_run / "model", tmp_path / "model")
    _edit_model_json(folder, edit)
    with pytest.raises(ModelFileError, match=f"model.json is not a valid model description: "
                                             f"{message}.*Restore the file"):
        read_info(folder)
