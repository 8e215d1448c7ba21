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


# --- advise (RUN/advice/classes.csv, index.html, the command) ---------------------------------

@pytest.mark.slow  # trains a tiny model on hostile names
def test_advise_on_hostile_class_names_keeps_them_text(tmp_path):
    """Class folders named as markup, as a spreadsheet formula and in bytes that are not
    UTF-8: the page shows them as text, the CSV cell is not a formula, the terminal shows
    the escape."""
    import csv
    import os
    from pathlib import Path

    from clearclass.advice import advise
    from clearclass.training import train
    from tests.conftest import make_photo, run_cli, tiny

    names = ["<img src=x onerror=alert(1)>", "=HYPERLINK(\"x\")",
             os.fsdecode(b"caf\xe9")]
    for c, name in enumerate(names):
        for k in range(12):
            make_photo(tmp_path / "d" / Path(name) / f"{k}.png",
                       colour=[(200, 10, 10), (10, 200, 10), (10, 10, 200)][c], seed=k)
    run = tmp_path / "run"
    train(str(tmp_path / "d"), out=str(run), **tiny(epochs=2))
    advice = advise(run, device="cpu")
    page = (run / "advice" / "index.html").read_text(encoding="utf-8")
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "caf\\xe9" in page
    with open(run / "advice" / "classes.csv", newline="", encoding="utf-8") as f:
        cells = [row[0] for row in csv.reader(f)][1:]
    assert "'=HYPERLINK(\"x\")" in cells and "caf\\xe9" in cells
    assert "<img src=x" not in advice._repr_html_()
    result = run_cli("advise", run, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "caf\\xe9" in result.stdout


def test_advise_after_photos_were_changed_by_clean_apply_is_one_line(run):
    from tests.conftest import failed, run_cli

    (run / "clean").mkdir(exist_ok=True)
    (run / "clean" / "applied.json").write_text("[]")
    failed(run_cli("advise", run), "applied", "Train again")


def test_too_few_photos_for_the_folds_is_said_and_fewer_are_used(run):
    from tests.conftest import run_cli

    result = run_cli("advise", run, "--folds", "50", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    said = " ".join((result.stdout + result.stderr).split())
    assert "folds instead of 50" in said


def test_a_class_without_validation_photos_has_no_accuracy_not_zero(run):
    import csv

    from clearclass.advice import advise, advising

    split = run / "split.csv"
    with open(split, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    valid, label = header.index("is_valid"), header.index("label")
    first = body[0][label]
    for row in body:
        if row[label] == first:
            row[valid] = "False"
    with open(split, "w", newline="") as f:
        csv.writer(f).writerows([header, *body])
    _resign(run)
    advice = advise(run, device="cpu")
    row = next(r for r in advice.classes if r.class_id == first)
    assert row.accuracy is None and row.valid_photos == 0
    assert row.needed is not None and not row.needed.known  # unknown, not reached
    cells = advising._cells(row)
    assert cells[2] == "no valid photos" and cells[-1] == "not enough data to say"


def _resign(run) -> None:
    """config.json's checksum of split.csv, for a split edited on purpose."""
    import json

    from clearclass.data.sources import SPLIT_CHECKSUM, split_checksum

    config = json.loads((run / "config.json").read_text())
    config[SPLIT_CHECKSUM] = split_checksum(run)
    (run / "config.json").write_text(json.dumps(config))
