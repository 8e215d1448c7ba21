"""`clean`'s judging (issue 23) on runs too small or too odd for it: a class of one photo,
one class only, photos all identical, a features file damaged between clean and apply. Each
says what was done in a line and lists what it can; never a traceback from scikit-learn or
cleanlab."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from clearclass import cleaning as cleaning_module
from clearclass import progress
from clearclass.advice.features import FEATURES_FILE, RunFeatures
from clearclass.advice.near_duplicates import find_near_duplicates
from clearclass.advice.outliers import find_outliers
from clearclass.cleaning import apply_actions, clean
from tests.conftest import failed, make_photo, run_cli, tiny


def _features(targets: list[int], classes: int = 3, seed: int = 0) -> RunFeatures:
    rng = np.random.default_rng(seed)
    targets_ = np.array(targets)
    features = rng.normal(size=(len(targets), 8)) + targets_[:, None] * 4
    chances = np.full((len(targets), classes), 1 / classes, dtype=np.float32)
    return RunFeatures([f"{i}.jpg" for i in range(len(targets))], targets_,
                       np.zeros(len(targets), bool), features.astype(np.float32),
                       [f"class{c}" for c in range(classes)], chances)


def _cleaning() -> SimpleNamespace:
    return SimpleNamespace(run_dir=Path("runs/x"), name=lambda c: c.upper())


def test_a_class_of_one_photo_is_named_with_the_folds_used(monkeypatch):
    said = []
    monkeypatch.setattr(cleaning_module, "warn", said.append)
    monkeypatch.setattr(cleaning_module, "say", lambda m: None)
    probabilities = cleaning_module._out_of_sample(_features([0] * 12 + [1] * 12 + [2]),
                                                   _cleaning(), 5)
    assert probabilities.shape == (25, 3)
    assert said == ["Class CLASS2 has only 1 photo(s): 2 folds instead of 5, so the labels of "
                    "small classes are judged less surely. More photos per class give a "
                    "surer list."]


def test_photos_all_of_one_class_give_no_label_issues_and_say_why(monkeypatch):
    said = []
    monkeypatch.setattr(cleaning_module, "warn", said.append)
    assert cleaning_module._out_of_sample(_features([1] * 6), _cleaning(), 5) is None
    assert len(said) == 1 and "all of one class" in said[0]


def test_identical_features_everywhere():
    same = np.ones((30, 16), dtype=np.float32)
    assert not find_outliers(same).is_outlier.any()
    assert len(find_near_duplicates(same)) >= 30  # every photo paired (10 neighbours each)


def test_a_folder_that_is_not_a_run_is_one_line(tmp_path):
    failed(run_cli("clean", tmp_path), "not a training run")


@pytest.fixture
def run(trained_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


@pytest.mark.slow  # clean on a tiny run, twice: a second or two each
def test_a_features_file_damaged_between_clean_and_apply(run):
    with progress.quiet():
        first = clean(run, device="cpu")
    kept = run / "advice" / FEATURES_FILE
    assert kept.is_file()
    kept.write_bytes(kept.read_bytes()[:100])  # cut short, as a full disk would leave it
    keep_all = run / "keep.csv"
    keep_all.write_text("path,action\n" + "".join(
        f"{first.shown(a.path)},keep\n" for a in first.actions), encoding="utf-8")
    with progress.quiet():
        applied = apply_actions(run, keep_all)  # apply never reads the features
        again = clean(run, device="cpu")  # computed again, the same list
    assert (applied.relabelled, applied.deleted) == (0, 0)
    assert [a.path for a in again.actions] == [a.path for a in first.actions]
    assert kept.stat().st_size > 1000


@pytest.mark.slow  # trains test_resnet, then clean in a real process
def test_identical_photos_and_a_class_of_two_photos(tmp_path):
    data = tmp_path / "data"
    for k in range(12):
        make_photo(data / "many" / f"{k}.jpg", colour=(90, 90, 90), seed=0)  # all the same
    for k in range(2):
        make_photo(data / "few" / f"{k}.jpg", colour=(90, 90, 90), seed=0)
    import clearclass

    with progress.quiet():
        clearclass.train(data, out=tmp_path / "run", validation_fraction=0.25, **tiny())
    result = run_cli("clean", tmp_path / "run", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    out = " ".join((result.stdout + result.stderr).split())
    assert "Traceback" not in out
    assert "has only 2 photo(s): 2 folds instead of 5" in out or \
        "has only 1 photo(s): 2 folds instead of 5" in out, out
    assert "duplicate" in out
