"""Multi-label models misused: a model of 120 labels (some named like markup, some long)
served and predicted, a model.json whose thresholds were edited into nonsense, and
`clearclass predict --threshold` given values that are not probabilities. Each ends in an
answer or in one line that says what is wrong, never a traceback or a 500.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

import clearclass
from clearclass.errors import SettingError
from tests.conftest import COLOURS, failed, make_photo, run_cli

LABELS = 120


@pytest.fixture(scope="module")
def many_labels(tmp_path_factory) -> Path:
    """A bundle of test_resnet with 120 labels (a random head, so that the probabilities
    differ; thresholds from 0.2 to 0.8) and a checked model.onnx. Some names are markup,
    one is 300 characters long."""
    import torch

    from clearclass.bundle import ModelInfo, save_bundle
    from clearclass.export import export_onnx
    from clearclass.model import create_model

    torch.manual_seed(0)
    model, source = create_model("test_resnet", LABELS, pretrained=False)
    head = model.get_classifier()
    torch.nn.init.normal_(head.weight, std=2.0)
    torch.nn.init.normal_(head.bias, std=1.0)
    names = [f"label {n}" for n in range(LABELS)]
    names[1], names[2] = "<script>alert(1)</script>", "\"quoted' <b>bold</b> &amp;"
    names[3] = "long " * 60
    thresholds = np.linspace(0.2, 0.8, LABELS).round(6).tolist()
    info = ModelInfo(architecture="test_resnet", class_ids=[f"id{n:03d}" for n in range(LABELS)],
                     class_names=names, item_resize=32, resize_method="crop",
                     mean=source.mean, std=source.std, task="multi", thresholds=thresholds)
    folder = save_bundle(model.eval(), info, tmp_path_factory.mktemp("many") / "model")
    export_onnx(folder)
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("photos")
    return [make_photo(root / f"{name}.jpg", colour, size=(64, 48), seed=n)
            for n, (name, colour) in enumerate(COLOURS.items())]


def test_a_server_of_120_labels_answers_every_label_of_32_photos_at_once(many_labels, photos):
    """Every label's probability and threshold for each photo of a full request, decided
    as clearclass.load decides, in seconds (the answer is 32 x 120 entries)."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from clearclass.serve import MAX_FILES, create_app

    expected = clearclass.load(many_labels).predict(photos[0]).to_dict()
    files = [("files", (f"{n}.jpg", photos[n % 3].read_bytes(), "image/jpeg"))
             for n in range(MAX_FILES)]
    with TestClient(create_app(many_labels)) as client:
        client.post("/predict", files=files[:1])  # the first run of the network warms it up
        start = time.monotonic()
        answer = client.post("/predict", files=files)
        seconds = time.monotonic() - start
        about = client.get("/model").json()
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert len(body) == MAX_FILES and all(len(b["probabilities"]) == LABELS for b in body)
    first = body[0]
    assert first["labels"] == expected["labels"] and first["class_ids"] == expected["class_ids"]
    assert all(t["probability"] >= t["threshold"] for t in first["predicted"])
    assert [t["label"] for t in first["probabilities"]] == [
        t["label"] for t in expected["probabilities"]]
    assert about["task"] == "multi" and len(about["classes"]) == LABELS
    assert about["classes"][1]["name"] == "<script>alert(1)</script>"
    assert seconds < 20, seconds  # not a speed test: a guard against work per label


def test_a_prediction_of_120_labels_draws_the_40_most_likely_and_says_so(many_labels, photos):
    from clearclass.figures import PREDICTION_LABELS_SHOWN

    prediction = clearclass.load(many_labels).predict(photos[1])
    bars = prediction.plot().axes[1]
    shown = max(PREDICTION_LABELS_SHOWN, len(prediction.labels))
    assert len(bars.patches) == shown
    assert f"({LABELS - shown} less likely labels not drawn)" in bars.get_title()
    html = prediction._repr_html_()
    assert html.count('class="clearclass-label') == LABELS  # the table lists them all
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_the_served_page_draws_120_bars_with_their_thresholds(many_labels, photos, browser,
                                                              tmp_path):
    from tests.conftest import Server

    pytest.importorskip("fastapi")
    server = Server(many_labels, tmp_path)
    try:
        page = browser.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("dialog", lambda d: (problems.append(d.message), d.dismiss()))
        page.goto(server.url + "/")
        page.locator("#choose").set_input_files(str(photos[2]))
        page.wait_for_function("document.getElementById('time').textContent.length > 0")
        assert page.locator("#list .bar").count() == LABELS
        assert page.locator("#list .threshold").count() == LABELS
        assert "<script>alert(1)</script>" in page.locator("#list").inner_text()
        page.close()
    finally:
        server.stop()
    assert problems == []


# --- model.json's thresholds edited --------------------------------------------------------------

def _threshold(value):
    def edit(data):
        data["classes"][1]["threshold"] = value
    return edit


def _no_threshold(data):
    del data["classes"][1]["threshold"]


def _task(value):
    def edit(data):
        data["task"] = value
    return edit


@pytest.mark.parametrize(("edit", "words"), [
    (_threshold("0.5"), "'classes[1].threshold' must be a number from 0 to 1 (a multi-label "
                        "model's), not the string \"0.5\""),
    (_threshold(1.5), "'classes[1].threshold' must be a number from 0 to 1 (a multi-label "
                      "model's), not 1.5"),
    (_threshold(-0.1), "not -0.1"),
    (_threshold(math.nan), "not NaN"),
    (_threshold(True), "not true"),
    (_threshold(None), "not null"),
    (_no_threshold, "it has no 'classes[1].threshold' (a multi-label model has one for every "
                    "class)"),
    (_task("multilabel"), "'task' must be \"single\" or \"multi\", not the string "
                          "\"multilabel\""),
], ids=["a string", "over 1", "under 0", "NaN", "true", "null", "missing", "another task"])
def test_an_edited_threshold_in_model_json_is_one_line_naming_the_file(
        multi_label_run, photos, tmp_path, edit, words):
    folder = shutil.copytree(multi_label_run / "model", tmp_path / "model")
    info = folder / "model.json"
    data = json.loads(info.read_text(encoding="utf-8"))
    edit(data)
    info.write_text(json.dumps(data), encoding="utf-8")  # NaN as JSON's NaN, as Python writes
    for command in (("predict", folder, photos[0]), ("serve", folder, "--port", "1")):
        failed(run_cli(*command), f"{info} is not a valid model description", words,
               "Restore the file from a copy, or train the model again")


@pytest.mark.parametrize("value", ["nan", "2", "-1", "inf", "1.0000001"])
def test_a_threshold_that_is_not_a_probability_is_refused_in_one_line(multi_label_run, photos,
                                                                       value):
    failed(run_cli("predict", multi_label_run / "model", photos[0], "--threshold", value),
           "--threshold must be a number from 0 to 1; got")
    # serve refuses it before it loads the model or takes the port (port 1 would be refused).
    failed(run_cli("serve", multi_label_run / "model", "--threshold", value, "--port", "1"),
           "--threshold must be a number from 0 to 1; got")
    with pytest.raises(SettingError, match="threshold must be a number"):
        clearclass.load(multi_label_run / "model", threshold=float(value))


def test_a_threshold_of_the_wrong_type_from_python_is_one_line(multi_label_run):
    from clearclass.serve import create_app

    for value in ("0.5", True, [0.5]):
        with pytest.raises(SettingError, match="threshold must be a number "
                                                                 "from 0 to 1; got"):
            clearclass.load(multi_label_run / "model", threshold=value)
        with pytest.raises(SettingError, match="threshold must be a number from 0 to 1; got"):
            create_app(multi_label_run / "model", threshold=value)


def test_a_server_worker_given_a_threshold_that_is_not_a_probability_refuses_it(
        multi_label_run, monkeypatch):
    """A worker reads `serve --threshold` from the environment, which anyone may set: a
    value that is not a probability is refused as the command line's is, not served."""
    from clearclass import serve

    monkeypatch.setenv(serve.MODEL_VARIABLE, str(multi_label_run / "model"))
    for value in ("nan", "1.5", "-0"):
        monkeypatch.setenv(serve.THRESHOLD_VARIABLE, value)
        if value == "-0":  # -0.0 is 0: every label predicted
            assert serve.app_from_environment() is not None
            continue
        with pytest.raises(SettingError, match="threshold must be a number from 0 to 1"):
            serve.app_from_environment()
    monkeypatch.setenv(serve.THRESHOLD_VARIABLE, "0.3x")
    with pytest.raises(SettingError, match="threshold must be a number from 0 to 1; got"):
        serve.app_from_environment()


# --- model.onnx's metadata not what clearclass writes -----------------------------------------

@pytest.mark.parametrize(("values", "words"), [
    ({"task": "multilabel"}, "'task' is \"multilabel\", not \"single\" or \"multi\""),
    ({"task": "<script>" * 20}, "'task' is \"<script><script>"),
    ({"class_ids": "blue,green,red"}, "'class_ids' is not JSON"),
    ({"class_ids": "[]"}, "'class_ids' is not a list of class ids"),
    ({"class_ids": '["blue", 7, "red"]'}, "'class_ids' is not a list of class ids"),
    ({"thresholds": "[NaN, 0.5, 0.5]"}, "'thresholds' is not 3 numbers from 0 to 1"),
    ({"thresholds": "[0.5, 0.5]"}, "'thresholds' is not 3 numbers from 0 to 1"),
    ({"thresholds": "[1e999, 0.5, 0.5]"}, "'thresholds' is not 3 numbers from 0 to 1"),
    ({"thresholds": "[true, 0.5, 0.5]"}, "'thresholds' is not 3 numbers from 0 to 1"),
    ({"thresholds": "[" * 100_000}, "'thresholds' is not JSON"),
    ({"thresholds": None}, "it has no 'thresholds'"),
], ids=["another task", "markup task", "not JSON", "no ids", "a number", "NaN", "too few",
        "infinite", "true", "nested deep", "missing"])
def test_model_onnx_metadata_not_clearclass_s_is_one_line_and_pytorch_predicts(
        multi_label_run, photos, tmp_path, values, words):
    """model.onnx is a file anyone can write, and model.json vouches for it whole (its
    SHA-256 recorded again here): metadata clearclass did not write is named in one line,
    by read_metadata and by predict, which warns and predicts with PyTorch instead."""
    import onnx

    from clearclass.bundle import record_onnx
    from clearclass.onnx_runtime import MetadataError, read_metadata

    folder = shutil.copytree(multi_label_run / "model", tmp_path / "model")
    path = folder / "model.onnx"
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    props.update(values)
    onnx.helper.set_model_props(model, {k: v for k, v in props.items() if v is not None})
    onnx.save(model, str(path))
    record_onnx(folder)
    with pytest.raises(MetadataError) as raised:
        read_metadata(path)
    assert words in str(raised.value) and len(str(raised.value).splitlines()) == 1
    result = run_cli("predict", folder, photos[0], "--json")
    assert result.returncode == 0, result.stderr
    warning = result.stderr.strip()
    assert warning.startswith("warning: ") and len(warning.splitlines()) == 1, warning
    assert words in warning and "predicting with PyTorch" in warning
    expected = clearclass.load(folder, backend="torch").predict(photos[0]).to_dict()
    assert json.loads(result.stdout)[0]["labels"] == expected["labels"]
