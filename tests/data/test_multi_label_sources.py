"""Labels CSVs with several labels per photo, or none (issue 25): how the task is chosen,
how cells split, the split, what split.csv keeps, and what is said about odd labels."""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from clearclass.data.sources import find_photos, parse_split
from clearclass.errors import DataError
from clearclass.run_folder import RunFolder
from tests.conftest import LABEL_SETS, make_multi_label_dataset, make_photo


def _table(root: Path, rows: list[tuple[str, ...]], header: str = "path,label") -> Path:
    """ROOT/labels.csv with `rows` (a photo made for each path)."""
    for row in rows:
        if not (root / row[0]).exists():
            make_photo(root / row[0], seed=len(row[0]))
    with open(root / "labels.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header.split(","))
        writer.writerows(rows)
    return root / "labels.csv"


def test_several_labels_in_a_cell_make_a_multi_label_set_with_its_labels(tmp_path):
    csv_path = make_multi_label_dataset(tmp_path / "d", per_set=5)
    photo_set = find_photos(csv_path)
    assert photo_set.task == "multi" and photo_set.layout == "multi-label CSV"
    assert photo_set.class_ids == ["blue", "green", "red"]
    by_name = {p.path.name: p.labels for p in photo_set.photos}
    assert by_name["0-00.jpg"] == ()  # an empty cell: none of these
    assert by_name["4-00.jpg"] == ("green", "red")  # sorted
    assert by_name["7-03.jpg"] == ("blue", "green", "red")
    assert any("Read as multi-label" in note for note in photo_set.notes)
    targets = photo_set.targets()
    assert targets.shape == (40, 3) and set(np.unique(targets)) == {0, 1}
    for photo, row in zip(photo_set.photos, targets):
        assert [c for c, on in zip(photo_set.class_ids, row) if on] == list(photo.labels)
    # counts: photos with each label, train and valid
    train, valid = photo_set.train, photo_set.valid
    assert photo_set.counts()["red"] == (sum("red" in p.labels for p in train),
                                          sum("red" in p.labels for p in valid))


def test_the_split_holds_out_each_label_and_repeats_for_a_seed(tmp_path):
    csv_path = make_multi_label_dataset(tmp_path / "d", per_set=10)
    first = find_photos(csv_path, validation_fraction=0.2, seed=1)
    assert len(first.valid) == 16  # a fifth of each group of photos
    for label in first.class_ids:
        assert any(label in p.labels for p in first.valid)
        assert any(label in p.labels for p in first.train)
    assert any(p.labels == () for p in first.valid)
    again = find_photos(csv_path, validation_fraction=0.2, seed=1)
    assert [p.path for p in again.valid] == [p.path for p in first.valid]
    assert [p.path for p in find_photos(csv_path, seed=2).valid] != [p.path for p in first.valid]


def test_a_rare_label_on_one_photo_stays_for_training_and_is_said(tmp_path):
    rows = [(f"p/{i}.jpg", "dog" if i % 2 else "cat;dog") for i in range(10)]
    rows.append(("p/rare.jpg", "dog;axolotl"))
    photo_set = find_photos(_table(tmp_path, rows))
    rare = next(p for p in photo_set.photos if p.path.name == "rare.jpg")
    assert not rare.is_valid
    assert any("'axolotl' is on one photo only" in note for note in photo_set.notes)


@pytest.mark.parametrize(("rows", "task", "delimiter", "expected"), [
    # fastai's space-separated cells: --task multi splits on spaces when no cell has ';'
    ([("a.jpg", "dog cat"), ("b.jpg", "cat")], "multi", None,
     {"a.jpg": ("cat", "dog"), "b.jpg": ("cat",)}),
    ([("a.jpg", "dog|cat"), ("b.jpg", "")], "auto", "|",
     {"a.jpg": ("cat", "dog"), "b.jpg": ()}),
    # ';' is the delimiter when any cell has one, even with spaces in labels
    ([("a.jpg", "golden retriever;beagle"), ("b.jpg", "beagle")], "multi", None,
     {"a.jpg": ("beagle", "golden retriever"), "b.jpg": ("beagle",)}),
])
def test_the_delimiter_splits_cells(tmp_path, rows, task, delimiter, expected):
    rows = rows + [(f"more/{i}.jpg", "cat") for i in range(4)]
    photo_set = find_photos(_table(tmp_path, rows), task=task, label_delimiter=delimiter)
    assert photo_set.task == "multi"
    labels = {p.path.name: p.labels for p in photo_set.photos}
    assert {name: labels[name] for name in expected} == expected


def test_auto_reads_fastai_space_separated_cells_as_sets_when_every_word_is_a_label(tmp_path):
    rows = [(f"p/{i}.jpg", ("beagle", "samoyed", "beagle samoyed", "samoyed  beagle")[i % 4])
            for i in range(12)]
    photo_set = find_photos(_table(tmp_path, rows))
    assert photo_set.task == "multi" and photo_set.class_ids == ["beagle", "samoyed"]
    assert {p.labels for p in photo_set.photos} == {("beagle",), ("samoyed",),
                                                    ("beagle", "samoyed")}
    assert any("separated by spaces" in note and "'beagle samoyed'" in note
               for note in photo_set.notes)
    # with an empty cell too (a photo with none of them)
    empty = find_photos(_table(tmp_path / "e", rows + [("p/none.jpg", "")]))
    assert empty.task == "multi" and empty.class_ids == ["beagle", "samoyed"]


@pytest.mark.parametrize(("cells", "task", "classes"), [
    # a word that never stands alone: a label with a space in it, and a note
    (("golden retriever", "beagle", "beagle golden"), "single",
     ["beagle", "beagle golden", "golden retriever"]),
    # ';' in a cell: ';' separates, a space stays inside a label
    (("golden retriever;beagle", "beagle", "golden retriever", "beagle golden retriever"),
     "multi", ["beagle", "beagle golden retriever", "golden retriever"]),
])
def test_auto_keeps_spaces_inside_labels_when_the_words_are_not_all_labels(tmp_path, cells,
                                                                           task, classes):
    rows = [(f"p/{i}.jpg", cells[i % len(cells)]) for i in range(4 * len(cells))]
    photo_set = find_photos(_table(tmp_path, rows))
    assert photo_set.task == task and photo_set.class_ids == classes
    # a delimiter chosen by the user is used as given, even where spaces would split
    chosen = find_photos(_table(tmp_path / "c", [(f"p/{i}.jpg", ("a b", "a", "b")[i % 3])
                                                for i in range(9)]), label_delimiter=";")
    assert chosen.task == "single" and chosen.class_ids == ["a", "a b", "b"]


def test_one_label_per_cell_stays_single_label_and_task_single_reads_cells_whole(tmp_path):
    rows = [(f"p/{i}.jpg", ("golden retriever", "beagle")[i % 2]) for i in range(10)]
    photo_set = find_photos(_table(tmp_path, rows))
    assert photo_set.task == "single" and photo_set.class_ids == ["beagle", "golden retriever"]
    assert all(p.labels is None for p in photo_set.photos)
    rows = [(f"p/{i}.jpg", ("dog;cat", "cat")[i % 2]) for i in range(10)]
    single = find_photos(_table(tmp_path, rows), task="single")
    assert single.task == "single" and single.class_ids == ["cat", "dog;cat"]


def test_labels_with_spaces_that_look_like_several_are_noted(tmp_path):
    # 'dog cat' looks like two labels, but 'sea lion' is one (no 'sea' alone): single-label,
    # and the note says how to read the cells as sets
    rows = [(f"p/{i}.jpg", ("dog", "cat", "dog cat", "sea lion")[i % 4]) for i in range(12)]
    photo_set = find_photos(_table(tmp_path, rows))
    assert photo_set.task == "single"
    assert any("'dog cat' reads as one label" in note and "--label-delimiter ' '" in note
               for note in photo_set.notes)


def test_multi_label_needs_a_csv(tmp_path):
    from tests.conftest import make_dataset

    with pytest.raises(DataError, match="several labels per photo come from a CSV"):
        find_photos(make_dataset(tmp_path / "d", per_class=3), task="multi")


def test_every_photo_with_the_same_labels_is_an_error(tmp_path):
    rows = [(f"p/{i}.jpg", "dog;cat") for i in range(10)]
    with pytest.raises(DataError, match=r"Every photo of .* has the same labels \(cat; dog\), "
                                        "so there is nothing to tell apart"):
        find_photos(_table(tmp_path, rows))


def test_odd_labels_are_said_once_each(tmp_path):
    rows = ([(f"p/{i}.jpg", "Dog;golden;retriever") for i in range(6)]
            + [(f"q/{i}.jpg", "dog;cat") for i in range(6)] + [(f"r/{i}.jpg", "cat")
                                                               for i in range(6)])
    notes = find_photos(_table(tmp_path, rows)).notes
    assert any("'Dog' and 'dog' differ only in case" in n for n in notes)
    assert any("'golden', 'retriever'" in n and "--label-delimiter" in n for n in notes)


def test_a_label_only_in_validation_rows_is_dropped_from_them_and_said(tmp_path):
    rows = [(f"p/{i}.jpg", ("dog", "cat;dog")[i % 2], "False") for i in range(8)]
    rows += [("v/0.jpg", "dog;unicorn", "True"), ("v/1.jpg", "cat", "True")]
    photo_set = find_photos(_table(tmp_path, rows, "path,label,is_valid"))
    assert photo_set.class_ids == ["cat", "dog"]
    kept = {p.path.name: p.labels for p in photo_set.valid}
    assert kept == {"0.jpg": ("dog",), "1.jpg": ("cat",)}
    assert any("unicorn" in n and "no training photo" in n for n in photo_set.notes)


@pytest.mark.parametrize("label", ['say "hi", then; go', "[not, json]", "=cmd|' /c calc'!A1",
                                   "<b>bold</b>", "café ☕", "tab\there"])
def test_split_csv_keeps_any_label_exactly(tmp_path, label):
    rows = [(f"p/{i}.jpg", label if i % 2 else "plain") for i in range(8)]
    rows += [(f"q/{i}.jpg", "") for i in range(4)]
    photo_set = find_photos(_table(tmp_path, rows), label_delimiter="~")
    assert photo_set.task == "multi" and label in photo_set.class_ids
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    folder.write_split(photo_set)
    digest = hashlib.sha256(folder.split_file.read_bytes()).hexdigest()
    again = parse_split(folder.path, photo_set.class_ids, digest, "multi")
    assert [(p.path.resolve(), p.labels, p.is_valid) for p in again.photos] == [
        (p.path.resolve(), p.labels, p.is_valid) for p in photo_set.photos]
    assert again.task == "multi"


def test_every_label_set_of_the_fixture_is_there():
    # The fixture other tests build on has every subset of its three labels.
    assert Counter(len(s) for s in LABEL_SETS) == {0: 1, 1: 3, 2: 3, 3: 1}
