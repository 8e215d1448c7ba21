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


# --- multi-label models -------------------------------------------------------------------------

@pytest.fixture
def stripes(tmp_path) -> list:
    """Three striped photos: red and blue, green, and grey (no label)."""
    from tests.conftest import make_multi_label_dataset

    csv = make_multi_label_dataset(tmp_path / "stripes", per_set=1,
                                   sets=(("blue", "red"), ("green",), ()))
    return sorted(csv.parent.glob("images/*.jpg"))


@pytest.fixture
def multi_label_model(multi_label_run, stripes, tmp_path):
    """A copy of the multi-label model whose thresholds give the first photo the labels
    blue and red, and not green; returns (folder, the first photo's probabilities)."""
    from tests.conftest import with_thresholds

    folder = shutil.copytree(multi_label_run / "model", tmp_path / "model")
    p = clearclass.load(folder).predict_proba([stripes[0]])[0]
    assert clearclass.load(folder).classes == ["blue", "green", "red"]
    with_thresholds(folder, [float(p[0]) - 0.01, min(1.0, float(p[1]) + 0.01),
                             float(p[2]) - 0.01])
    return folder, p


def test_model_json_s_thresholds_decide_over_those_model_onnx_was_exported_with(
        multi_label_model, multi_label_run, stripes):
    """model.onnx's metadata keeps the thresholds of its export, for a user of the file
    alone; clearclass decides with model.json's, which may be tuned since (here: by
    with_thresholds), and still in ONNX Runtime (not a contradiction to fall back on)."""
    from clearclass.onnx_runtime import read_metadata

    folder, _ = multi_label_model
    exported = read_metadata(folder / "model.onnx").thresholds
    assert exported == read_info(multi_label_run / "model").thresholds
    assert exported != read_info(folder).thresholds
    classifier = clearclass.load(folder)
    assert classifier.backend == "onnx"
    assert [t["threshold"] for t in sorted(classifier.predict(stripes[0]).probabilities,
                                           key=lambda t: t["label"])] == read_info(
        folder).thresholds


def test_a_multi_label_prediction_is_the_set_over_the_thresholds(multi_label_model, stripes):
    folder, p = multi_label_model
    for backend in ("onnx", "torch"):
        prediction = clearclass.load(folder, backend=backend).predict(stripes[0], top_k=2)
        expected = sorted(["blue", "red"], key=lambda label: -p[["blue", "green", "red"]
                                                                .index(label)])
        assert [t["label"] for t in prediction.labels] == expected, backend
        assert prediction.class_name == "; ".join(expected) == prediction.class_id
        assert [t["label"] for t in prediction.probabilities] == [
            ["blue", "green", "red"][i] for i in np.argsort(-p, kind="stable")]
        assert [t["threshold"] for t in prediction.probabilities] == [
            read_info(folder).thresholds[["blue", "green", "red"].index(t["label"])]
            for t in prediction.probabilities]
        assert len(prediction.top_k) == 2
        answer = prediction.to_dict()
        assert set(answer) == {"image", "labels", "class_ids", "predicted", "probabilities"}
        assert answer["labels"] == answer["class_ids"] == expected
        assert answer["predicted"] == prediction.labels
        assert json.loads(json.dumps(answer)) == answer  # what --json and the API send
    # A label whose probability is exactly its threshold reaches it: predicted.
    exact = clearclass.load(folder, threshold=float(p.max())).predict(stripes[0])
    assert [t["label"] for t in exact.labels] == [["blue", "green", "red"][int(p.argmax())]]


def test_onnx_and_torch_give_a_multi_label_model_the_same_sigmoids(multi_label_run, stripes):
    onnx = clearclass.load(multi_label_run / "model", backend="onnx").predict_proba(stripes)
    torch = clearclass.load(multi_label_run / "model", backend="torch").predict_proba(stripes)
    assert onnx.shape == (3, 3)
    np.testing.assert_allclose(onnx, torch, atol=1e-5)
    assert not np.allclose(onnx.sum(1), 1.0)  # independent sigmoids, not a softmax


def test_predict_prints_the_set_and_json_gives_every_label(multi_label_model, stripes):
    from tests.conftest import run_cli

    folder, p = multi_label_model
    result = run_cli("predict", folder, *stripes[:2])
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    order = sorted([(p[0], "blue"), (p[2], "red")], reverse=True)
    assert first == f"{stripes[0]}: " + ", ".join(f"{label} ({q:.1%})" for q, label in order)
    assert second.startswith(f"{stripes[1]}: ")
    result = run_cli("predict", folder, stripes[0], "--json")
    assert result.returncode == 0, result.stderr
    [answer] = json.loads(result.stdout)
    assert answer["image"] == str(stripes[0])
    assert answer["labels"] == [label for _, label in order]
    assert [set(t) for t in answer["probabilities"]] == [
        {"label", "class_id", "probability", "threshold"}] * 3
    assert sorted(t["label"] for t in answer["probabilities"]) == ["blue", "green", "red"]
    probabilities = [t["probability"] for t in answer["probabilities"]]
    assert probabilities == sorted(probabilities, reverse=True)


def test_threshold_overrides_the_thresholds_of_model_json(multi_label_model, stripes):
    from tests.conftest import run_cli

    folder, p = multi_label_model
    everything = run_cli("predict", folder, stripes[0], "--threshold", "0", "--json")
    [answer] = json.loads(everything.stdout)
    assert sorted(answer["labels"]) == ["blue", "green", "red"]
    assert {t["threshold"] for t in answer["probabilities"]} == {0.0}
    above = f"{float(p.max()) + 0.001:.4f}"
    nothing = run_cli("predict", folder, stripes[0], "--threshold", above)
    most_likely = ["blue", "green", "red"][int(p.argmax())]
    assert nothing.stdout == (f"{stripes[0]}: no label over its threshold; most likely "
                              f"{most_likely} ({p.max():.1%})\n")
    assert clearclass.load(folder, threshold=0.0).predict(stripes[0]).class_name.count(";") == 2


def test_a_single_label_model_given_a_threshold_is_one_line(trained_run, stripes):
    from tests.conftest import failed, run_cli

    failed(run_cli("predict", trained_run / "model", stripes[0], "--threshold", "0.3"),
           "--threshold is for multi-label models", "gives one class per photo")
    with pytest.raises(SettingError, match="threshold is for multi-label models"):
        clearclass.load(trained_run / "model", threshold=0.3)


def test_a_multi_label_prediction_shows_its_set_and_every_labels_bar(multi_label_model, stripes):
    folder, _ = multi_label_model
    classifier = clearclass.load(folder)
    prediction = classifier.predict(stripes[0])
    html = prediction._repr_html_()
    assert html.count('class="clearclass-label') == 3
    assert html.count('class="clearclass-label over"') == 2
    assert html.count('title="threshold"') == 3
    assert "<b>red</b>" in html and "<b>blue</b>" in html and "<b>green</b>" not in html
    figure = prediction.plot()
    bars = figure.axes[1]
    assert len(bars.patches) == 3 and len(bars.collections[0].get_offsets()) == 3
    assert "blue" in bars.get_title() and "red" in bars.get_title()
    assert prediction._repr_png_().startswith(b"\x89PNG")
    # A photo with no label over its threshold says so.
    none = clearclass.load(folder, threshold=1.0).predict(stripes[0])
    assert none.labels == [] and none.class_name == "(none)"
    assert "no label over its threshold" in none._repr_html_()
    assert none.plot().axes[1].get_title() == "no label over its threshold"
