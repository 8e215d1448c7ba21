"""The advice's features (issue 23) when a run's files change between steps."""

from __future__ import annotations

import shutil

import pytest

from clearclass.advice.features import run_features
from clearclass.errors import RunError
from clearclass.run_folder import RunFolder


@pytest.fixture
def run(trained_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


def test_a_photo_deleted_since_training_has_no_row_and_is_named(run, tmp_path, caplog):
    photos = RunFolder(run).split().photos
    moved = tmp_path / "moved.png"
    shutil.copy(photos[3].path, moved)
    photos[3].path.unlink()
    try:
        found = run_features(run, device="cpu")
    finally:
        shutil.copy(moved, photos[3].path)  # the session's photos are shared
    assert len(found) == len(photos) - 1 and str(photos[3].path) not in found.paths
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "Skipped 1 unreadable file(s), e.g." in warned and "skipped.csv" not in warned


def test_an_edited_split_is_refused_naming_the_file(run):
    split = run / "split.csv"
    split.write_text(split.read_text().replace("True", "False", 1))
    with pytest.raises(RunError, match="split.csv"):
        run_features(run, device="cpu")
    assert not (run / "advice").exists()  # nothing half-written


def test_the_imbalance_warning_shows_a_name_that_is_not_utf8_escaped(tmp_path):
    import os
    from pathlib import Path

    import clearclass
    from tests.conftest import make_photo, run_cli

    big = Path(os.fsdecode(b"caf\xe9"))
    for k in range(60):
        make_photo(tmp_path / "d" / big / f"{k}.png", colour=(200, 10, 10), seed=k)
    for k in range(10):
        make_photo(tmp_path / "d" / "small" / f"{k}.png", colour=(10, 10, 200), seed=k)
    result = run_cli("explore", tmp_path / "d", "--item-resize", "32", "--workers", "0")
    assert result.returncode == 0, result.stderr
    assert "imbalanced: caf\\xe9 has 48 training photos" in " ".join(result.stdout.split())
    html = clearclass.explore(tmp_path / "d", item_resize=32, workers=0)._repr_html_()
    assert "imbalanced: caf\\xe9 has 48" in html


# --- learning curves on hostile class sizes ---------------------------------------------------

def _features(train_counts, valid_counts, width=8, seed=0):
    import numpy as np

    from clearclass.advice.features import RunFeatures

    rng = np.random.default_rng(seed)
    classes = len(train_counts)
    targets = np.concatenate([np.full(t + v, c) for c, (t, v)
                              in enumerate(zip(train_counts, valid_counts, strict=True))])
    is_valid = np.concatenate([np.r_[np.zeros(t, bool), np.ones(v, bool)]
                               for t, v in zip(train_counts, valid_counts, strict=True)])
    centres = rng.normal(scale=3, size=(classes, width))
    features = (centres[targets] + rng.normal(size=(len(targets), width))).astype("float32")
    return RunFeatures([f"p{i}" for i in range(len(targets))], targets, is_valid, features,
                       [f"c{c}" for c in range(classes)],
                       np.full((len(targets), classes), 1 / classes, "float32"))


def test_learning_curves_with_a_class_of_one_training_photo():
    from clearclass.advice.learning_curve import learning_curves, photos_needed

    curves = learning_curves(_features([30, 30, 1], [10, 10, 10]), seeds=2)
    assert (curves.photos[:, :, 2] == 1).all()  # that one photo at every fraction
    row = photos_needed(curves, target=0.999)[2]
    assert row.photos_now == 1 and (row.more == 0 or "distinct photo counts" in row.reason)


def test_a_class_without_validation_photos_has_an_unknown_accuracy_not_zero():
    import numpy as np

    from clearclass.advice.learning_curve import learning_curves, photos_needed

    curves = learning_curves(_features([20, 20, 20], [10, 10, 0]), fractions=(0.2, 0.5, 1),
                             seeds=1)
    assert np.isnan(curves.class_accuracy[:, :, 2]).all()
    assert not np.isnan(curves.accuracy).any()  # overall: the photos there are
    row = photos_needed(curves, target=0.9)[2]
    assert row.accuracy_now is None and "no validation photos" in row.reason


def test_120_classes_of_3_photos_each():
    from clearclass.advice.learning_curve import learning_curves, photos_needed
    from clearclass.figures import learning_curves as figure

    curves = learning_curves(_features([2] * 120, [1] * 120, width=16), seeds=2)
    rows = photos_needed(curves, target=0.99)
    assert len(rows) == 120
    assert all(r.more == 0 or "distinct photo counts" in r.reason for r in rows)
    fig = figure(curves, rows, 0.99)
    assert "8 of 120 classes" in fig.axes[1].get_title()
