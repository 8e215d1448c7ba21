"""Multi-label CSVs as a new user gets them wrong (issue 25): a label with the delimiter in
it, labels that differ only in case, a label never in training, every row with the same
labels, a Windows-1252 file, a huge label cell. Each is one line: an error that says what to
do, or a note that says what was done, and the run goes on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import COLOURS, failed, make_photo, run_cli, tiny_options


def _photos(root: Path, rows: list[tuple[str, str]], header: str = "path,label",
            encoding: str = "utf-8") -> Path:
    """ROOT/labels.csv over photos coloured by their first label (grey with none)."""
    lines = [header]
    for n, (labels, extra) in enumerate(rows):
        first = labels.split(";")[0].strip().lower()
        path = make_photo(root / "images" / f"{n:03d}.jpg", COLOURS.get(first, (128,) * 3),
                          seed=n)
        cells = [f"images/{path.name}", f'"{labels}"'] + ([extra] if extra else [])
        lines.append(",".join(cells))
    (root / "labels.csv").write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return root / "labels.csv"


def _train(csv_path: Path, tmp_path: Path, *options: str):
    return run_cli("train", str(csv_path), "--out", str(tmp_path / "run"),
                   *tiny_options(epochs=0), *options)


def _labels(tmp_path: Path) -> list[str]:
    info = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    return [c["id"] for c in info["classes"]]


def test_a_label_with_the_delimiter_inside_it_is_said(tmp_path):
    # "golden;retriever" meant as one label: its two halves are on the same photos.
    rows = [("red;golden;retriever", ""), ("red", ""), ("green", ""), ("blue;green", "")] * 4
    result = _train(_photos(tmp_path / "d", rows), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "'golden', 'retriever'" in result.stdout and "--label-delimiter" in result.stdout
    assert _labels(tmp_path) == ["blue", "golden", "green", "red", "retriever"]
    # Said once, on one line
    assert sum("--label-delimiter" in line for line in result.stdout.splitlines()) == 1


def test_labels_that_differ_only_in_case_are_kept_apart_and_said(tmp_path):
    rows = [("Red;green", ""), ("red", ""), ("blue", ""), ("green;blue", "")] * 4
    result = _train(_photos(tmp_path / "d", rows), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "'Red' and 'red' differ only in case" in result.stdout
    assert _labels(tmp_path) == ["Red", "blue", "green", "red"]


def test_a_label_never_in_training_is_left_out_and_said(tmp_path):
    rows = [("red", "False"), ("green;red", "False"), ("blue", "False")] * 4
    rows += [("red;unicorn", "True"), ("green", "True"), ("blue;red", "True")]
    result = _train(_photos(tmp_path / "d", rows, "path,label,is_valid"), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "unicorn" in result.stdout and "no training photo" in result.stdout
    assert _labels(tmp_path) == ["blue", "green", "red"]


def test_every_row_with_the_same_labels_is_one_error(tmp_path):
    rows = [("red;green", "")] * 12
    failed(_train(_photos(tmp_path / "d", rows), tmp_path), "has the same labels (green; red)",
           "nothing to tell apart")
    assert not (tmp_path / "run").exists()


def test_a_windows_1252_file_with_accented_labels(tmp_path):
    rows = [("café;red", ""), ("thé", ""), ("green;thé", ""), ("blue", "")] * 4
    csv_path = _photos(tmp_path / "d", rows, encoding="cp1252")
    result = _train(csv_path, tmp_path)
    assert result.returncode == 0, result.stderr
    assert _labels(tmp_path) == ["blue", "café", "green", "red", "thé"]


def test_a_cell_with_thousands_of_labels_is_read_without_blowing_up(tmp_path):
    """A label cell pasted with 5,000 labels: 5,000 outputs, a row of 5,000 bytes a photo
    (uint8 targets), read in seconds."""
    many = ";".join(f"tag{i}" for i in range(5000))
    rows = [(many, ""), ("red", ""), ("green", ""), ("blue;red", "")] * 3
    result = _train(_photos(tmp_path / "d", rows), tmp_path, "--threshold", "auto")
    assert result.returncode == 0, result.stderr
    assert len(_labels(tmp_path)) == 5003
    assert "5003 labels" in result.stdout


@pytest.mark.parametrize(("task", "message"), [
    ("multi", "several labels per photo come from a CSV"),
])
def test_multi_label_from_class_folders_is_one_error(tmp_path, task, message):
    from tests.conftest import make_dataset

    failed(_train(make_dataset(tmp_path / "d", per_class=4), tmp_path, "--task", task),
           message)


def test_space_separated_hostile_labels_are_read_as_sets_and_split_csv_keeps_them(tmp_path):
    """fastai-style cells whose words are markup and a formula: read as sets by --task auto
    (every word is a label alone elsewhere), said in one line, kept whole in model.json,
    and read back as the same sets from the run's split.csv."""
    html, formula = "<!--<script>", "=cmd|x"
    rows = [(f"{html} {formula}", ""), (html, ""), (formula, ""), ("red", "")] * 4
    result = _train(_photos(tmp_path / "d", rows), tmp_path)
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stdout.splitlines() if "separated by spaces" in line]
    assert len(said) == 1 and f"'{html} {formula}'" in said[0]
    assert _labels(tmp_path) == sorted([html, formula, "red"])
    from clearclass.run_folder import RunFolder

    photos = RunFolder(tmp_path / "run").split().photos
    assert {p.labels for p in photos} == {tuple(sorted((html, formula))), (html,), (formula,),
                                          ("red",)}
