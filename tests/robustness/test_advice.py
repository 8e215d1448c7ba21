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
