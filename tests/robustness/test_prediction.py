"""`clearclass predict` given bad photos, damaged bundles and missing devices, as a user runs it.

Each case runs the command and checks what the user sees: no traceback, the exit status the
command's help documents (0 all predicted, 3 some inputs could not be, 1 nothing predicted:
the model or an option is wrong), the results for the good photos, and one line naming each
problem. The cases run in this process (tests/conftest.run_cli), the first in a real one:
exit status 3 as the shell sees it. Most run on a bundle with a checked model.onnx, as a
deployed model is.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import COLOURS, make_photo, run_cli

ALL_PREDICTED, NOTHING_PREDICTED, SOME_FAILED = 0, 1, 3


def predict(*args: object, in_process: bool = True) -> subprocess.CompletedProcess:
    """`clearclass predict ARGS`; it must never end in a traceback."""
    return run_cli("predict", *args, in_process=in_process)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The single line of a command that stopped on a ClearclassError (exit status 1)."""
    assert result.returncode == NOTHING_PREDICTED, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def bundles(trained_run, tmp_path_factory) -> dict[str, Path]:
    """Copies of the trained model: "plain" (PyTorch only) and "onnx" (exported, checked)."""
    from clearclass.export import export_onnx

    root = tmp_path_factory.mktemp("bundles")
    plain = shutil.copytree(trained_run / "model", root / "plain")
    (plain / "model.onnx").unlink(missing_ok=True)
    onnx = shutil.copytree(plain, root / "onnx")
    export_onnx(onnx)
    return {"plain": plain, "onnx": onnx}


@pytest.fixture
def bundle(bundles, tmp_path):
    """A fresh copy of a bundle to damage: bundle("onnx") or bundle("plain")."""
    return lambda kind: shutil.copytree(bundles[kind], tmp_path / kind)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """A folder of good photos with a text file named .jpg and an empty .png among them."""
    root = tmp_path_factory.mktemp("inputs")
    folder = root / "photos"
    good = [make_photo(folder / "a_red.jpg", COLOURS["red"], seed=1),
            make_photo(folder / "c_blue.png", COLOURS["blue"], seed=2),
            make_photo(folder / "sub" / "e_green.jpg", COLOURS["green"], seed=3)]
    (folder / "b_notes.jpg").write_text("this is not a photo")
    (folder / "d_empty.png").write_bytes(b"")
    (folder / "readme.txt").write_text("not an image name: never predicted")
    (root / "no_photos").mkdir()
    return {"folder": folder, "good": good, "bad": [folder / "b_notes.jpg",
                                                  folder / "d_empty.png"],
            "missing": root / "missing.jpg", "empty": root / "no_photos"}


def test_bad_inputs_are_reported_one_by_one_and_the_good_photos_predicted(bundles, photos):
    result = predict(bundles["onnx"], photos["folder"], photos["missing"], photos["empty"],
                     in_process=False)
    assert result.returncode == SOME_FAILED, result.stderr
    printed = result.stdout.splitlines()
    assert [line.split(": ")[0] for line in printed] == [str(p) for p in photos["good"]]
    assert [line.split(": ")[1].split(" (")[0] for line in printed] == ["red", "blue", "green"]
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 4, result.stderr
    assert errors[0].startswith(f"error: {photos['bad'][0]}: cannot be read as an image (")
    assert errors[1].startswith(f"error: {photos['bad'][1]}: cannot be read as an image (")
    assert errors[2:] == [f"error: {photos['missing']}: does not exist",
                          f"error: {photos['empty']}: is a folder with no images in it"]


def test_json_output_holds_an_error_object_for_each_bad_input(bundles, photos):
    result = predict(bundles["onnx"], photos["folder"], photos["missing"], "--json")
    assert result.returncode == SOME_FAILED, result.stderr
    listed = json.loads(result.stdout)
    good, bad = photos["good"], photos["bad"]
    assert [item["image"] for item in listed] == [str(p) for p in (good[0], bad[0], good[1],
                                                                    bad[1], good[2],
                                                                    photos["missing"])]
    assert [item["label"] for item in listed if "label" in item] == ["red", "blue", "green"]
    errors = [item for item in listed if "error" in item]
    assert all(set(item) == {"image", "error"} for item in errors) and len(errors) == 3
    assert errors[-1]["error"] == "does not exist"
    assert len(result.stderr.strip().splitlines()) == 3


def test_all_photos_readable_exits_zero_with_nothing_on_stderr(bundles, photos):
    result = predict(bundles["onnx"], *photos["good"])
    assert (result.returncode, result.stderr) == (ALL_PREDICTED, "")
    assert len(result.stdout.splitlines()) == 3


def test_a_damaged_onnx_file_warns_and_predicts_with_pytorch(bundle, photos):
    folder = bundle("onnx")
    onnx = folder / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])
    result = predict(folder, photos["good"][0])
    assert result.returncode == ALL_PREDICTED, result.stderr
    assert result.stdout.startswith(f"{photos['good'][0]}: red (")
    warning = result.stderr.strip()
    assert warning.startswith("warning: ") and len(warning.splitlines()) == 1
    assert "model.onnx" in warning and "PyTorch" in warning and "clearclass export" in warning


def test_truncated_weights_say_restore_or_train_again_not_re_export(bundle, photos):
    folder = bundle("plain")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    line = one_error_line(predict(folder, photos["good"][0]))
    assert "model.safetensors is damaged" in line
    assert "Restore it from a copy" in line and "train the model again" in line
    assert "export" not in line.replace(str(folder), "")


def _more_classes(data):
    data["classes"].append({"id": "purple", "name": "purple"})
    data["num_classes"] += 1


def _one_class(data):
    data["classes"], data["num_classes"] = data["classes"][:1], 1


def _drop_size(data):
    del data["preprocessing"]["size"]


def _newer(data):
    data["format_version"] = 3


def _swapped_ids(data):
    """Two classes' ids swapped: as many outputs, which model.onnx's metadata tells apart."""
    first, second = data["classes"][0], data["classes"][1]
    first["id"], second["id"] = second["id"], first["id"]


def _made_multi_label(data):
    data["task"], data["format_version"] = "multi", 2
    for entry in data["classes"]:
        entry["threshold"] = 0.5


@pytest.mark.parametrize(("kind", "edit", "expected"), [
    # The weights are read by PyTorch here: the one case of this file that imports it.
    ("plain", _more_classes, "model.json lists 4 classes but the weights in model.safetensors "
                             "have 3 outputs"),
    ("onnx", _one_class, "model.json lists 1 class but model.onnx has 3 outputs"),
    ("onnx", [["the", "model"]], "model.json is not a valid model description: it holds a list"),
    ("onnx", b"\x00\xff\xfe garbage \x89", "model.json is not text"),
    ("onnx", _drop_size, "model.json is not a valid model description: it has no "
                         "'preprocessing.size'"),
    ("onnx", _newer, "model.json was written by a newer clearclass (format version 3"),
    ("onnx", _swapped_ids, "model.json lists the classes 'green', 'blue', 'red' but "
                           "model.onnx was exported for 'blue', 'green', 'red'"),
    ("onnx", _made_multi_label, "model.json gives the task as multi but model.onnx was "
                                "exported for single"),
], ids=["more names", "one name", "a list", "garbage bytes", "missing field", "newer version",
        "swapped ids", "another task"])
def test_an_edited_model_json_is_named_with_what_is_wrong(bundle, photos, kind, edit, expected):
    folder = bundle(kind)
    info = folder / "model.json"
    if isinstance(edit, bytes):
        info.write_bytes(edit)
    elif isinstance(edit, list):
        info.write_text(json.dumps(edit))
    else:
        data = json.loads(info.read_text())
        edit(data)
        info.write_text(json.dumps(data))
    line = one_error_line(predict(folder, photos["good"][0]))
    assert str(info) in line and expected in line
    assert "upgrade clearclass" in line if edit is _newer else "Restore" in line


@pytest.mark.parametrize(("device", "expected"), [
    ("cuda", "--device cuda: PyTorch sees no CUDA GPU on this machine; available: cpu"),
    ("mps", "--device mps: Apple MPS is not available on this machine; available: cpu"),
    ("cuda:", "Unknown device 'cuda:'; use one of auto, cpu, cuda, cuda:N or mps"),
])
def test_a_device_that_is_not_here_is_one_line(bundles, photos, device, expected):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has Apple MPS")
    assert expected in one_error_line(predict(bundles["onnx"], photos["good"][0],
                                              "--device", device))
