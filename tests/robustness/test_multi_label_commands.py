"""explore, clean and advise on hostile multi-label data (issue 25): label names that are
markup or spreadsheet formulas, a label on one photo only, labels that differ only in case,
most photos with no label, every photo with the same labels, a row with too many cells.
Each is shown as text, written so that it reads back, said in a line, never a traceback."""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import pytest

import clearclass
from clearclass import fileio
from clearclass.cleaning import apply_actions, clean, undo
from clearclass.data.sources import find_photos
from clearclass.errors import DataError
from clearclass.run_folder import RunFolder
from tests.conftest import failed, make_photo, run_cli, tiny

HTML, FORMULA = "<img src=x onerror=alert(1)>", "=cmd|' /C calc'!A0"
GREY, RED, GREEN, BLUE = (128, 128, 128), (200, 40, 40), (40, 170, 60), (40, 60, 200)
# (labels, colour, photos): most photos without a label, two labels that are markup and a
# formula, two that differ only in case, one label on a single photo.
PLAN = [((), GREY, 14), ((HTML,), RED, 4), ((FORMULA,), GREEN, 4), (("Cat",), BLUE, 3),
        (("cat",), BLUE, 3), ((HTML, FORMULA), (200, 170, 40), 2), (("solo",), (250,) * 3, 1)]


def _labels_csv(root: Path, plan=PLAN) -> Path:
    rows, n = [("path", "label")], 0
    for labels, colour, count in plan:
        for _ in range(count):
            make_photo(root / f"{n:02d}.png", colour, seed=n)
            rows.append((f"{n:02d}.png", ";".join(labels)))
            n += 1
    with open(root / "labels.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return root / "labels.csv"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[Path, Path]:
    """The labels CSV of PLAN, and a run trained on it for one frozen epoch (its labels'
    handling is what is tested, not what it learned)."""
    root = tmp_path_factory.mktemp("hostile-labels")
    data = _labels_csv(root / "photos")
    run = clearclass.train(str(data), out=str(root / "run"), **tiny(epochs=0))
    return data, run.run_dir


@pytest.fixture
def run(hostile, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(hostile[1], copy)
    return copy


def test_explore_shows_the_names_as_text_and_says_what_looks_wrong(hostile, tmp_path):
    data, _ = hostile
    result = run_cli("explore", data, "--item-resize", "32", "--workers", "0",
                     "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    said = " ".join((result.stdout + result.stderr).split())
    assert HTML in said and FORMULA in said  # a terminal shows text as it is
    assert "'Cat' and 'cat' differ only in case" in said
    assert "'solo' is on one photo only" in said
    assert "Rare labels: solo on 1 of" in said
    assert "Labels per photo (readable photos): 14 photos with 0 labels" in said
    assert (tmp_path / "out" / "cooccurrence.png").is_file()
    found = clearclass.explore(data, item_resize=32, workers=0)
    assert set(found.counts()) == {HTML, FORMULA, "Cat", "cat", "solo"}
    assert [name for name, _ in found.samples][-1] == "(no label)"
    html = found._repr_html_()
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img src=x" not in html
    titles = [ax.get_title() for ax in clearclass.show_batch(data, n=16, item_resize=32).axes]
    assert "(none)" in titles


def test_every_photo_with_the_same_labels_is_one_line(tmp_path):
    data = _labels_csv(tmp_path, [(("cat", "dog"), RED, 6)])
    with pytest.raises(DataError, match="the same labels"):
        clearclass.explore(data, item_resize=32)
    for command in ("explore", "lr-find"):
        failed(run_cli(command, data, "--out", tmp_path / command), "the same labels")


def test_a_row_with_too_many_cells_names_the_tables_delimiter(tmp_path):
    make_photo(tmp_path / "a.png")
    make_photo(tmp_path / "b.png", RED)
    (tmp_path / "labels.csv").write_text("path,label\na.png,cat dog\nb.png,cat,extra\n")
    # Labels split on spaces (--task multi): the message is about the commas of the table.
    failed(run_cli("explore", tmp_path / "labels.csv", "--task", "multi"),
           "3 fields where the header has 2", "holds a comma")


def _cells(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: fileio.read_cell(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_clean_quotes_the_formula_escapes_the_markup_and_leaves_the_lone_label(run):
    result = run_cli("clean", run, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stderr.split())
    assert "Not judged: solo (on one photo only" in said
    actions = (run / "clean" / "actions.csv").read_text(encoding="utf-8")
    assert FORMULA in actions  # listed at all
    assert not any(line.split(",")[2].startswith("=") for line in actions.splitlines()[1:]
                   if len(line.split(",")) > 2)  # a spreadsheet runs no cell
    rows = _cells(run / "clean" / "actions.csv")
    sets = {r["label"] for r in rows}
    assert sets & {FORMULA, f"{FORMULA};{HTML}", HTML}  # back as the labels, exactly
    # No head saw 'solo' on another photo: it is disputed nowhere.
    assert not any("solo " in r["evidence"] and "one of its labels" in r["evidence"]
                   for r in rows)
    page = (run / "clean" / "index.html").read_text(encoding="utf-8")
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_advise_gives_each_label_a_row_shown_and_written_safely(run):
    advice = clearclass.advise(run, device="cpu")
    assert {r.class_id for r in advice.classes} == {HTML, FORMULA, "Cat", "cat", "solo"}
    page = (run / "advice" / "index.html").read_text(encoding="utf-8")
    assert "<img src=x" not in page and "&lt;img src=x" in page
    raw = (run / "advice" / "classes.csv").read_text(encoding="utf-8")
    assert "\n=" not in raw and f"'{FORMULA}" in raw
    assert {r["label"] for r in _cells(run / "advice" / "classes.csv")} == {
        HTML, FORMULA, "Cat", "cat", "solo"}
    assert "solo on 1 of" in (advice.imbalance or "")


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _write_actions(path: Path, header: list[str], rows: list[list[str]]) -> None:
    """An actions.csv as a user edits it: `header`, then `rows`."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])


def test_relabel_to_a_set_of_hostile_labels_reads_back_and_undoes(run):
    clean(run, device="cpu")
    data = Path(RunFolder(run).model_info().training["data"])
    before = _tree(data.parent)
    rows = _cells(run / "clean" / "actions.csv")
    header = list(rows[0])
    edited = run / "clean" / "edited.csv"
    # A grey photo given the two hostile labels (by hand, as a user would type them).
    _write_actions(edited, header, [["00.png", "", "", "relabel", f"{HTML};{FORMULA}", "", ""],
                                    ["01.png", "", "", "relabel", "CAT", "", ""]])
    with pytest.raises(DataError, match="'CAT' is not a label of the run"):
        apply_actions(run, edited)  # the case matters: nothing changed
    assert _tree(data.parent) == before
    _write_actions(edited, header, [["00.png", "", "", "relabel", f"{HTML};{FORMULA}", "", ""],
                                    ["01.png", "", "", "relabel", f"cat;{FORMULA}", "", ""]])
    try:
        apply_actions(run, edited)
        raw = data.read_text(encoding="utf-8")
        # A cell that starts as a formula is quoted for spreadsheets, and reads back.
        assert f"\n00.png,{HTML};{FORMULA}\n" in raw
        assert f"\n01.png,'{FORMULA};cat\n" in raw
        labels = {p.path.name: p.labels for p in find_photos(data).photos}
        assert labels["00.png"] == tuple(sorted((HTML, FORMULA)))
        assert labels["01.png"] == (FORMULA, "cat")
    finally:
        undo(run)  # the module's data is shared
    assert _tree(data.parent) == before


def test_relabel_to_an_unknown_hostile_label_is_one_line_and_changes_nothing(run):
    """A new_label the run does not know, typed with a line break, markup and a formula: one
    line (the label escaped) that says clean relabels only to the run's labels and what to
    do for a new one; the labels CSV untouched."""
    clean(run, device="cpu")
    data = Path(RunFolder(run).model_info().training["data"])
    before = _tree(data.parent)
    header = list(_cells(run / "clean" / "actions.csv")[0])
    edited = run / "clean" / "edited.csv"
    _write_actions(edited, header, [["00.png", "", "", "relabel", f"cat;owl\n{HTML}", "", ""],
                                    ["01.png", "", "", "relabel", "=HYPERLINK(\"x\")", "", ""]])
    result = run_cli("clean", run, "--apply", edited)
    failed(result, "2 row(s) cannot be applied, so nothing was changed",
           "new_label 'owl\\n<img src=x onerror=alert(1)>' is not a label of the run",
           "new_label '=HYPERLINK(\"x\")' is not a label of the run",
           "clean relabels only to the run's labels: for a new label, add it to the photos in "
           "the labels CSV yourself and train a new run")
    assert _tree(data.parent) == before and not (run / "clean" / "applied.json").exists()
