"""The features of a run's photos: one pass, kept, reused only for the same weights."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from clearclass.advice import features as features_module
from clearclass.advice.features import FEATURES_FILE, run_features
from clearclass.errors import RunError
from clearclass.run_folder import RunFolder


@pytest.fixture
def run(trained_run, tmp_path):
    """A copy of the session's tiny run, free to change."""
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


def test_one_row_per_photo_in_the_splits_order_and_the_classifier_reads_them(run):
    import torch

    from clearclass.bundle import load_bundle

    found = run_features(run, device="cpu")
    split = RunFolder(run).split()
    assert found.paths == [str(p.path) for p in split.photos]
    assert found.is_valid.tolist() == [p.is_valid for p in split.photos]
    assert found.features.dtype == np.float32 and found.features.shape[0] == len(split.photos)
    # The vectors are what the classifier reads: its last layer on them gives the logits.
    model, info = load_bundle(run / "model")
    assert found.class_ids == info.class_ids
    logits = model.get_classifier()(torch.from_numpy(found.features)).detach().numpy()
    assert (logits.argmax(1) == found.targets).mean() > 0.8  # the colours were learned
    # The model's own probabilities come with them: its softmax over those logits.
    softmax = torch.softmax(torch.from_numpy(logits), 1).numpy()
    assert found.probabilities.shape == (len(split.photos), len(info.class_ids))
    np.testing.assert_allclose(found.probabilities, softmax, atol=1e-5)


def test_kept_features_are_reused_and_computed_again_for_other_weights(run, monkeypatch):
    first = run_features(run, device="cpu")
    assert (run / "advice" / FEATURES_FILE).is_file()
    monkeypatch.setattr(features_module, "_compute", lambda *a: pytest.fail("recomputed"))
    again = run_features(run, device="cpu")
    assert np.array_equal(again.features, first.features) and again.paths == first.paths
    monkeypatch.undo()

    calls = []
    real = features_module._compute
    monkeypatch.setattr(features_module, "_compute", lambda *a: calls.append(1) or real(*a))
    (run / "advice" / FEATURES_FILE).write_bytes(b"cut short")  # damaged: computed again
    assert np.array_equal(run_features(run, device="cpu").features, first.features)
    # Kept for other weights (the run trained again since): computed again.
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    kept = run / "advice" / FEATURES_FILE
    with safe_open(str(kept), framework="numpy") as f:
        metadata = {**f.metadata(), "weights_sha256": "0" * 64}
    save_file(load_file(str(kept)), str(kept), metadata=metadata)
    assert np.array_equal(run_features(run, device="cpu").features, first.features)
    assert calls == [1, 1]


def test_what_is_not_a_run_is_refused_naming_it(tmp_path):
    with pytest.raises(RunError, match="not a training run"):
        run_features(tmp_path)


def test_multi_label_features_keep_their_task_and_multi_hot_targets(tmp_path):
    from clearclass.advice.features import RunFeatures, _read, _write

    targets = np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0]])
    found = RunFeatures(["a.jpg", "b.jpg", "c.jpg"], targets, np.array([False, True, False]),
                        np.ones((3, 4), np.float32), ["x", "y", "z"],
                        np.full((3, 3), 0.25, np.float32), "multi")
    key = {"weights_sha256": "w", "split_sha256": "s"}
    path = tmp_path / FEATURES_FILE
    _write(path, found, key)
    back = _read(path, key)
    assert back.is_multi_label and back.targets.tolist() == targets.tolist()
    # A file whose targets do not fit its task is computed again, not misread.
    _write(path, RunFeatures(found.paths, np.array([0, 2, 1]), found.is_valid, found.features,
                             found.class_ids, found.probabilities, "multi"), key)
    assert _read(path, key) is None
