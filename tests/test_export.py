from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from clearclass.bundle import load_bundle, read_info, save_bundle
from clearclass.errors import ModelFileError
from clearclass.export import export_onnx
from clearclass.fileio import atomic_write


def test_bundle_is_safetensors_and_json_and_round_trips(trained_run, tmp_path):
    model, info = load_bundle(trained_run / "model")
    assert sorted(p.name for p in (trained_run / "model").iterdir()
                  if not p.name.endswith(".onnx")) == ["model.json", "model.safetensors"]
    data = json.loads((trained_run / "model" / "model.json").read_text())
    assert data["format"] == "clearclass-model" and data["format_version"] == 1
    assert data["architecture"] == "test_resnet"
    assert set(data["preprocessing"]) >= {"size", "resize_method", "mean", "std"}
    copy = save_bundle(model, info, tmp_path / "copy")
    again, again_info = load_bundle(copy)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    assert again_info == info


def test_a_half_written_bundle_is_detected(trained_run, tmp_path):
    folder = shutil.copytree(trained_run / "model", tmp_path / "model")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ModelFileError, match="checksum"):
        load_bundle(folder)


def test_pickles_are_refused_with_the_reason(tmp_path):
    pkl = tmp_path / "export.pkl"
    pkl.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ModelFileError, match="pickle.*runs whatever code"):
        load_bundle(pkl)
    with pytest.raises(ModelFileError, match="not a clearclass model"):
        load_bundle(tmp_path)


def test_newer_format_versions_are_refused(trained_run, tmp_path):
    folder = shutil.copytree(trained_run / "model", tmp_path / "model")
    data = json.loads((folder / "model.json").read_text())
    data["format_version"] = 99
    (folder / "model.json").write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match="newer clearclass"):
        read_info(folder)


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "model.json"
    target.write_text("old")

    def crash(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, crash)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]


def test_onnx_export_matches_pytorch(trained_run, tmp_path):
    import onnxruntime as ort

    folder = shutil.copytree(trained_run / "model", tmp_path / "model")
    path = export_onnx(folder)
    model, info = load_bundle(folder)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    side = info.item_resize
    x = np.random.default_rng(0).normal(size=(5, 3, side, side)).astype(np.float32)
    got = session.run(None, {"image": x})[0]
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert got.shape == (5, len(info.class_ids))
    assert np.abs(got - expected).max() < 1e-4
    # Saving new weights removes the ONNX file that described the old ones.
    save_bundle(model, info, folder)
    assert not path.exists()


@pytest.mark.parametrize("task", ["single", "multi"])
def test_model_onnx_gives_the_logits_then_the_tasks_probabilities(trained_run, multi_label_run,
                                                                   tmp_path, task):
    """Output 0 stays the logits (what older consumers read); output 1 is the softmax of a
    single-label model, the sigmoids of a multi-label one, as clearclass computes them."""
    import onnxruntime as ort

    from clearclass.onnx_runtime import output_names

    run = trained_run if task == "single" else multi_label_run
    folder = shutil.copytree(run / "model", tmp_path / "model")
    path = export_onnx(folder)
    assert output_names(path) == ["logits", "probabilities"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.shape[1] for o in session.get_outputs()] == [3, 3]
    x = np.random.default_rng(1).normal(size=(4, 3, 32, 32)).astype(np.float32)
    logits, probabilities = session.run(None, {"image": x})
    model, info = load_bundle(folder)
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(torch.from_numpy(x)).numpy(), atol=1e-4)
    np.testing.assert_allclose(probabilities, info.decision().probabilities(logits), atol=1e-6)
    if task == "single":
        np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)
    else:
        np.testing.assert_allclose(probabilities, 1 / (1 + np.exp(-logits)), atol=1e-6)


def test_the_export_check_covers_the_probabilities(multi_label_run, tmp_path, monkeypatch):
    """An export whose probabilities differ from PyTorch's (here: halved only while being
    exported) is removed, naming the output; prediction runs PyTorch."""
    from clearclass.task import MultiLabel

    folder = shutil.copytree(multi_label_run / "model", tmp_path / "model")
    (folder / "model.onnx").unlink()
    real = MultiLabel.torch_probabilities

    def halved_in_the_export(self, logits):
        return real(self, logits) * (0.5 if torch.onnx.is_in_onnx_export() else 1.0)

    monkeypatch.setattr(MultiLabel, "torch_probabilities", halved_in_the_export)
    with pytest.raises(ModelFileError, match="differs from PyTorch by .* in the "
                                             "probabilities; it was removed"):
        export_onnx(folder)
    assert not (folder / "model.onnx").exists()
    monkeypatch.undo()
    from clearclass.predict import load

    assert load(folder).backend == "torch"


@pytest.mark.parametrize("task", ["single", "multi"])
def test_model_onnx_says_its_task_classes_and_thresholds(trained_run, multi_label_run, tmp_path,
                                                         task):
    """The file alone says what its outputs mean, as ONNX Runtime reads it: the task, the
    class ids in the outputs' order and (multi-label) model.json's threshold for each."""
    import onnxruntime as ort

    from clearclass.onnx_runtime import OnnxMetadata, read_metadata

    run = trained_run if task == "single" else multi_label_run
    folder = shutil.copytree(run / "model", tmp_path / "model")
    path = export_onnx(folder)
    info = read_info(folder)
    values = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]
                                  ).get_modelmeta().custom_metadata_map
    assert values["task"] == task
    assert json.loads(values["class_ids"]) == info.class_ids == ["blue", "green", "red"]
    if task == "multi":
        assert json.loads(values["thresholds"]) == info.thresholds
    else:
        assert "thresholds" not in values
    assert read_metadata(path) == OnnxMetadata(task, info.class_ids, info.thresholds)
    # The file model.json vouches for is the one with the metadata.
    from clearclass.bundle import sha256

    assert info.checksums["model.onnx"] == sha256(path)


def test_the_export_check_covers_the_metadata(multi_label_run, tmp_path, monkeypatch):
    """An export whose metadata does not say model.json's thresholds is removed."""
    from clearclass import onnx_runtime

    folder = shutil.copytree(multi_label_run / "model", tmp_path / "model")
    (folder / "model.onnx").unlink()
    real = onnx_runtime.bundle_metadata

    def all_at_a_half(info):
        return {**real(info), "thresholds": json.dumps([0.5] * len(info.class_ids))}

    monkeypatch.setattr(onnx_runtime, "bundle_metadata", all_at_a_half)
    with pytest.raises(ModelFileError, match="does not hold the task, classes and thresholds "
                                             "of model.json; it was removed"):
        export_onnx(folder)
    assert not (folder / "model.onnx").exists()


def test_a_model_onnx_with_only_logits_still_predicts(multi_label_run, trained_run, tmp_path):
    """A model.onnx exported before the probabilities output (logits alone) keeps working
    in clearclass's ONNX path, for either task."""
    from clearclass.bundle import record_onnx
    from clearclass.onnx_runtime import export_module, output_names, read_metadata
    from clearclass.predict import load
    from tests.conftest import COLOURS, make_photo

    photo = make_photo(tmp_path / "red.jpg", COLOURS["red"], seed=3)
    for task, run in (("single", trained_run), ("multi", multi_label_run)):
        folder = shutil.copytree(run / "model", tmp_path / task / "model")
        expected = load(folder, backend="onnx").predict_proba([photo])
        model, info = load_bundle(folder)
        export_module(model, torch.randn(2, 3, 32, 32), folder / "model.onnx")
        record_onnx(folder)
        assert output_names(folder / "model.onnx") == ["logits"]
        assert read_metadata(folder / "model.onnx") is None  # nor any metadata
        old = load(folder, backend="onnx")
        np.testing.assert_allclose(old.predict_proba([photo]), expected, atol=1e-5)
        assert old.predict(photo).to_dict().keys() == load(
            folder, backend="torch").predict(photo).to_dict().keys()
