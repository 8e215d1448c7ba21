"""Training with several labels per photo (issue 25): sigmoid outputs and binary
cross-entropy in fine_tune's two stages, fastai's accuracy_multi, F1 and mAP per epoch, the
thresholds saved in model.json, resume and torchrun as for one label."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import clearclass
from clearclass.errors import SettingError
from clearclass.run_folder import RunFolder
from clearclass.task import best_thresholds, multi_label_scores
from clearclass.training import loop
from clearclass.training.checkpoint import read_checkpoint
from tests.conftest import (
    failed,
    make_multi_label_dataset,
    run_cli,
    stop_in_epoch,
    tiny,
    tiny_options,
)


def _metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _validation_scores(run: Path, threshold_auto: bool) -> tuple[dict, list[float]]:
    """The last epoch's figures, computed again from the saved model's probabilities on the
    validation photos of split.csv (PyTorch, so as training computed them)."""
    folder = RunFolder(run)
    photo_set = folder.split()
    valid = photo_set.valid
    classifier = clearclass.load(run / "model", backend="torch", device="cpu")
    probabilities = classifier.predict_proba([p.path for p in valid])
    targets = photo_set.targets(valid)
    thresholds = (best_thresholds(probabilities, targets) if threshold_auto
                  else [0.5] * targets.shape[1])
    return multi_label_scores(probabilities, targets, thresholds), thresholds


@pytest.fixture(scope="module")
def labels_csv(tmp_path_factory) -> Path:
    return make_multi_label_dataset(tmp_path_factory.mktemp("multi") / "stripes", per_set=10)


@pytest.fixture(scope="module")
def auto_run(labels_csv, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "auto"
    clearclass.train(labels_csv, out=str(out), **tiny(epochs=2, threshold="auto"))
    return out


def test_a_multi_label_run_reports_fastais_scores_and_saves_its_tuned_thresholds(auto_run):
    rows = _metrics(auto_run)
    assert list(rows[0]) == ["epoch", "train_loss", "valid_loss", "accuracy", "f1_micro",
                             "f1_macro", "mean_ap", "time", "stage"]
    assert [r["stage"] for r in rows] == ["frozen", "unfrozen", "unfrozen"]
    info = json.loads((auto_run / "model" / "model.json").read_text())
    assert info["task"] == "multi" and info["format_version"] == 2
    saved = [c["threshold"] for c in info["classes"]]
    # The validation figures are the saved model's, at the thresholds tuned on its
    # validation probabilities: every photo's row gathered in order.
    scores, thresholds = _validation_scores(auto_run, threshold_auto=True)
    np.testing.assert_allclose(saved, thresholds, atol=2e-4)
    last = rows[-1]
    for name in ("accuracy", "f1_micro", "f1_macro", "mean_ap"):
        assert float(last[name]) == pytest.approx(scores[name], abs=2e-4), name
    assert clearclass.load(auto_run / "model").info.task == "multi"
    summary = json.loads((auto_run / "summary.json").read_text())
    assert summary["valid_accuracy"] == pytest.approx(float(last["accuracy"]), abs=1e-6)


def test_a_fixed_threshold_is_saved_for_every_label_and_scores_use_it(labels_csv, tmp_path,
                                                                      capsys):
    out = tmp_path / "run"
    run = clearclass.train(labels_csv, out=str(out), **tiny(epochs=1, threshold=0.3))
    # The last line names the figures for what they are, not plain "accuracy".
    last = _metrics(out)[-1]
    assert (f"Validation accuracy_multi {float(last['accuracy']):.2%}, F1 micro "
            f"{float(last['f1_micro']):.3f}, F1 macro {float(last['f1_macro']):.3f}, mean "
            f"average precision {float(last['mean_ap']):.3f}. Model saved in"
            ) in " ".join(capsys.readouterr().out.split())
    info = json.loads((out / "model" / "model.json").read_text())
    assert [c["threshold"] for c in info["classes"]] == [0.3, 0.3, 0.3]
    assert run.config.threshold == "0.3"
    scores, _ = _validation_scores(out, threshold_auto=False)
    probabilities = clearclass.load(out / "model", backend="torch", device="cpu")
    assert probabilities.task.thresholds == [0.3, 0.3, 0.3]
    assert float(_metrics(out)[-1]["mean_ap"]) == pytest.approx(scores["mean_ap"], abs=2e-4)


def test_the_model_learns_the_sets(labels_csv, tmp_path):
    """Stripes of colours are easy: a few epochs get most (photo, label) pairs right and
    the sets predicted are the colours drawn."""
    out = tmp_path / "run"
    run = clearclass.train(labels_csv, out=str(out), **tiny(epochs=4, threshold="auto"))
    assert run.accuracy >= 0.8
    assert float(_metrics(out)[-1]["mean_ap"]) >= 0.8
    classifier = clearclass.load(out / "model")
    photos = sorted((labels_csv.parent / "images").glob("*.jpg"))
    truth = {p.path.name: set(p.labels) for p in RunFolder(out).split().photos}
    right = sum(set(classifier.predict(p).class_id.split("; ")) - {"(none)"} == truth[p.name]
                for p in photos)
    assert right / len(photos) >= 0.5


def test_resume_inside_an_epoch_ends_as_the_uninterrupted_run(labels_csv, tmp_path,
                                                              monkeypatch):
    settings = tiny(epochs=2, threshold="auto")
    whole = clearclass.train(labels_csv, out=str(tmp_path / "whole"), **settings)
    real = stop_in_epoch(monkeypatch, 1)
    out = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        loop.train(labels_csv, out=str(out), **settings)
    assert read_checkpoint(out).position.epochs_done == 1
    monkeypatch.setattr(loop, "train_one_epoch", real)
    resumed = loop.resume(out)
    assert len(resumed.history) == 3
    for a, b in zip(_metrics(out), _metrics(whole.run_dir)):
        for column in ("train_loss", "valid_loss", "accuracy", "f1_macro", "mean_ap"):
            assert float(a[column]) == pytest.approx(float(b[column]), abs=1e-3), column
    thresholds = [json.loads((run / "model" / "model.json").read_text())["classes"]
                  for run in (out, whole.run_dir)]
    assert [c["threshold"] for c in thresholds[0]] == pytest.approx(
        [c["threshold"] for c in thresholds[1]], abs=1e-3)


@pytest.mark.parametrize(("options", "message"), [
    (["--balance", "weights"], "--balance is for one class per photo"),
    (["--threshold", "1.5"], "--threshold must be a number between 0 and 1, or auto"),
    (["--threshold", "sometimes"], "--threshold must be a number between 0 and 1, or auto"),
    (["--task", "multiple"], "Did you mean multi"),
    (["--label-delimiter", ";;"], "--label-delimiter must be one character"),
])
def test_settings_that_cannot_apply_are_one_line(labels_csv, tmp_path, options, message):
    result = run_cli("train", str(labels_csv), "--out", str(tmp_path / "run"),
                     *tiny_options(), *options)
    failed(result, message)
    with pytest.raises(SettingError):
        clearclass.train(labels_csv, out=str(tmp_path / "api"),
                         **tiny(**{options[0][2:].replace("-", "_"): options[1]}))


def test_predict_names_the_set_and_every_probability(auto_run):
    photo = next((auto_run / "split.csv").open().readlines()[1:].__iter__()).split(",")[0]
    text = run_cli("predict", str(auto_run / "model"), photo)
    assert text.returncode == 0, text.stderr
    listed = run_cli("predict", str(auto_run / "model"), photo, "--json", "--threshold", "0")
    (answer,) = json.loads(listed.stdout)
    assert answer["labels"] == ["blue", "green", "red"] or len(answer["labels"]) == 3
    assert [p["threshold"] for p in answer["probabilities"]] == [0, 0, 0]
    assert sorted(p["label"] for p in answer["probabilities"]) == ["blue", "green", "red"]
    none = json.loads(run_cli("predict", str(auto_run / "model"), photo, "--json",
                              "--threshold", "1").stdout)[0]
    assert none["labels"] == [] and none["predicted"] == []


@pytest.mark.slow  # two training processes under torchrun
def test_two_processes_gather_every_validation_photo(labels_csv, tmp_path):
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "clearclass", "train", str(labels_csv), "--processes", "2",
         "--out", str(out), *tiny_options(batch_size=8), "--threshold", "auto"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    scores, thresholds = _validation_scores(out, threshold_auto=True)
    last = _metrics(out)[-1]
    for name in ("accuracy", "f1_macro", "mean_ap"):
        assert float(last[name]) == pytest.approx(scores[name], abs=2e-4), name
    saved = json.loads((out / "model" / "model.json").read_text())["classes"]
    np.testing.assert_allclose([c["threshold"] for c in saved], thresholds, atol=2e-4)
