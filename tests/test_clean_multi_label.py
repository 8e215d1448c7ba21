"""`clearclass clean` on a multi-label run (issue 25): the photos planted with a wrong set of
labels are listed first with the set they show; an edited actions.csv relabels a photo with
a whole new set (or none) and moves one aside, and undo puts the labels CSV back byte for
byte; rows that cannot be applied are refused in one line, before anything changes."""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import pytest

from clearclass import cleaning as cleaning_module
from clearclass.cleaning import MISLABELLED, RELABEL, apply_actions, clean, undo
from clearclass.data.sources import find_photos
from clearclass.errors import DataError
from clearclass.run_folder import RunFolder
from tests.conftest import MISLABELLED_SETS, failed, run_cli


@pytest.fixture
def run(mislabelled_multi_label_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(mislabelled_multi_label_run, copy)
    return copy


def _data(run: Path) -> Path:
    return Path(RunFolder(run).model_info().training["data"])


def _actions(run: Path) -> list[dict]:
    with open(run / "clean" / "actions.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_the_planted_label_sets_come_first_with_the_set_they_show(run):
    cleaning = clean(run, device="cpu")
    assert cleaning.is_multi_label and cleaning.cell_delimiter == ";"
    first = cleaning.actions[:2]
    assert {cleaning.shown(a.path) for a in first} == set(MISLABELLED_SETS)
    for a in first:
        given, drawn = MISLABELLED_SETS[cleaning.shown(a.path)]
        assert a.reason == MISLABELLED and a.action == RELABEL
        assert a.labels == given and a.new_labels == drawn
        assert a.score > 0.5  # cleanlab's quality score of the set, low
    rows = {r["path"]: r for r in _actions(run)[:2]}
    # Cells as the labels CSV writes them: ';' between labels, (none) for no label.
    assert (rows["images/1-00.jpg"]["label"], rows["images/1-00.jpg"]["new_label"]) == (
        "blue;red", "red")
    assert (rows["images/3-01.jpg"]["label"], rows["images/3-01.jpg"]["new_label"]) == (
        "(none)", "blue")
    assert "blue" in rows["images/3-01.jpg"]["evidence"]
    assert "not among its labels" in rows["images/3-01.jpg"]["evidence"]
    summary = cleaning.summary()
    assert "images/1-00.jpg (blue; red): relabel to red" in summary
    assert "images/3-01.jpg ((none)): relabel to blue" in summary
    page = (run / "clean" / "index.html").read_text(encoding="utf-8")
    assert "whole new set of labels" in page and "(none)</code> for none" in page


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _edit(run: Path, changes: dict[str, tuple[str, str]]) -> Path:
    """actions.csv with the rows of `changes` (path -> (action, new_label)), the rest keep;
    a photo clean did not list gets a row of its own (its label left empty: not checked)."""
    rows = _actions(run)
    listed = {r["path"] for r in rows}
    rows += [dict.fromkeys(rows[0], "") | {"path": path} for path in changes
             if path not in listed]
    for r in rows:
        r["action"], r["new_label"] = changes.get(r["path"], ("keep", ""))
    edited = run / "clean" / "edited.csv"
    with open(edited, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return edited


def test_relabel_gives_a_whole_new_set_delete_moves_aside_and_undo_restores(run):
    clean(run, device="cpu")
    data = _data(run)
    before = _tree(data.parent)
    edited = _edit(run, {"images/1-00.jpg": ("relabel", "red"),
                         "images/3-01.jpg": ("delete", ""),
                         "images/2-00.jpg": ("relabel", "(none)"),
                         "images/7-00.jpg": ("relabel", "green ; red")})  # spaces: fine
    try:
        applied = apply_actions(run, edited)
        assert (applied.relabelled, applied.deleted) == (3, 1)
        after = find_photos(data)
        labels = {p.path.name: p.labels for p in after.photos}
        assert labels["1-00.jpg"] == ("red",) and labels["2-00.jpg"] == ()
        assert labels["7-00.jpg"] == ("green", "red") and "3-01.jpg" not in labels
        assert (run / "clean" / "removed" / "images" / "3-01.jpg").is_file()
        text = data.read_text()
        assert "images/1-00.jpg,red\n" in text and "images/2-00.jpg,\n" in text
        assert "images/7-00.jpg,green;red\n" in text  # the table's own delimiter
    finally:
        undo(run)  # the session's data is shared
    assert _tree(data.parent) == before


@pytest.mark.parametrize("change, words", [
    (("relabel", "purple"), "'purple' is not a label of the run"),
    (("relabel", ""), "or (none) for no label"),
    (("relabel", "red;blue"), "the labels it has"),
])
def test_a_new_set_that_cannot_be_applied_changes_nothing(run, change, words):
    clean(run, device="cpu")
    data = _data(run)
    before = _tree(data.parent)
    edited = _edit(run, {"images/1-00.jpg": change})
    with pytest.raises(DataError, match="nothing was changed") as raised:
        apply_actions(run, edited)
    assert words in str(raised.value)
    assert _tree(data.parent) == before and not (run / "clean" / "applied.json").exists()


def test_relabel_to_a_label_the_run_does_not_know_is_one_line_saying_what_to_do(run):
    clean(run, device="cpu")
    data = _data(run)
    before = _tree(data.parent)
    edited = _edit(run, {"images/1-00.jpg": ("relabel", "red;purple")})
    failed(run_cli("clean", run, "--apply", edited),
           "new_label 'purple' is not a label of the run (e.g. blue, green, red); "
           "labels are separated by ';'",
           "clean relabels only to the run's labels: for a new label, add it to the photos "
           "in the labels CSV yourself and train a new run",
           "apply the file again")
    assert _tree(data.parent) == before and not (run / "clean" / "applied.json").exists()


def test_a_row_whose_labels_changed_since_is_refused(run):
    clean(run, device="cpu")
    rows = _actions(run)
    for r in rows:
        r["action"] = "keep"
    rows[0]["action"], rows[0]["label"] = "delete", "green"  # not the set it has
    edited = run / "clean" / "edited.csv"
    with open(edited, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(DataError, match="run `clearclass clean` again"):
        apply_actions(run, edited)


def test_the_command_lists_applies_and_undoes(run):
    result = run_cli("clean", run, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stdout.split())
    assert "relabel to red" in said and "relabel to blue" in said
    data = _data(run)
    before = _tree(data.parent)
    edited = _edit(run, {"images/1-00.jpg": ("relabel", "red")})
    try:
        result = run_cli("clean", run, "--apply", edited)
        assert result.returncode == 0, result.stderr
        assert "1 photo(s) relabelled" in " ".join((result.stdout + result.stderr).split())
    finally:
        assert run_cli("clean", run, "--undo").returncode == 0
    assert _tree(data.parent) == before
    failed(run_cli("clean", run, "--apply", _edit(run, {"images/1-00.jpg": ("relabel",
                                                                            "teal")})),
           "teal", "not a label of the run")


def test_labels_the_heads_cannot_judge_are_said_in_a_line(monkeypatch):
    import numpy as np

    from clearclass.advice.features import RunFeatures

    said = []
    monkeypatch.setattr(cleaning_module, "warn", said.append)
    targets = np.ones((12, 2), dtype=np.int64)  # every photo has both labels
    found = RunFeatures([f"{i}.jpg" for i in range(12)], targets, np.zeros(12, bool),
                        np.random.default_rng(0).normal(size=(12, 8)).astype("float32"),
                        ["a", "b"], np.full((12, 2), 0.5, "float32"), "multi")
    cleaning = cleaning_module.Cleaning(Path("runs/x"), None, ["a", "b"], ["a", "b"], [],
                                        task="multi")
    assert cleaning_module._out_of_sample_labels(found, cleaning, 5) is None
    assert len(said) == 1 and "all have the same labels" in said[0]
    targets[0] = [0, 1]  # a on all photos but one: 2 folds, said
    said.clear()
    probabilities = cleaning_module._out_of_sample_labels(found, cleaning, 5)
    assert probabilities.shape == (12, 2) and (probabilities[:, 1] == 1).all()
    assert "Label a is missing from only 1 photo(s): 2 folds instead of 5" in said[0]


def test_every_outlier_is_listed_its_labels_judged_only_where_a_head_could_learn_them():
    import numpy as np

    from clearclass.advice.outliers import Outliers
    from clearclass.data.sources import multi_label_photo

    paths = [Path(f"{i}.jpg") for i in range(5)]
    sets = [("a",), ("b",), (), ("a",), ("a", "b")]
    photos = [multi_label_photo(path, labels, False) for path, labels in zip(paths, sets)]
    chances = np.array([[0.9, 0.1], [0.2, 0.1], [0.7, 0.2], [0.8, 0.1], [0.3, 0.6]])
    flagged = np.array([True, True, True, False, True])
    outliers = Outliers(np.array([5.0, 4.0, 3.0, 1.0, 2.0]), np.array([5.0, 4.0, 3.0, 1.0, 2.0]),
                        np.zeros(5), flagged, 1.5)
    # Label b is on one photo only: no head could learn it (`_judged_labels`).
    judged = cleaning_module._Judged(paths, chances, chances, [], outliers, [], [],
                                     frozenset({1}))
    cleaning = cleaning_module.Cleaning(Path("runs/x"), None, ["a", "b"], ["a", "b"], [],
                                        task="multi")
    found = cleaning_module._outliers(cleaning, judged, {p.path: p for p in photos},
                                      set(paths), {"a": 0, "b": 1})
    assert [f.path for f in found] == [paths[0], paths[1], paths[2], paths[4]]
    a, b, none, both = found
    assert a.action == "keep" and "a (its label) 90%" in a.evidence
    assert b.action == "keep" and "too few photos to be judged" in b.evidence
    # No label, and the heads give a 70%: 30% that it has none, so it goes.
    assert none.action == "delete" and "no label (it has none) 30%" in none.evidence
    assert both.action == "delete" and "least likely label of a; b 30%" in both.evidence
    assert both.labels == ("a", "b")
