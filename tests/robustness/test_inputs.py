"""Bad inputs through the command line, as a new user would give them.

Each case builds its files, then runs `clearclass` on them (in this process: what is checked
is the exit status and the words printed; tests/robustness/test_runs.py runs a real process
for each way the command ends). A bad input must end with exit status 1 and a one-line
message that names the problem, never a traceback; the inputs spreadsheets and people make
that used to fail (UTF-16, ';', Windows-1252, a class kept elsewhere behind a link) must
work. The finer cases are tested through the Python API in tests/data/test_sources.py.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import make_dataset, make_photo, run_cli

# Small and quick: no augmentation figure work beyond the minimum, decoding in-process.
QUICK = ["--workers", "0", "--item-resize", "32", "--batch-augment", "none"]


@dataclass
class Result:
    folder: Path
    returncode: int
    stdout: str
    stderr: str

    @property
    def said(self) -> str:
        """Everything printed, with the terminal's line wrapping and table lines undone."""
        text = re.sub("[\u2500-\u257f]", " ", self.stdout + " " + self.stderr)
        return " ".join(text.split())


def _photos(folder: Path) -> Path:
    return make_dataset(folder / "photos", per_class=4)


def _csv(folder: Path, text: str, name: str = "labels.csv", encoding: str = "utf-8") -> Path:
    """A labels table beside the photos."""
    path = folder / "photos" / name
    path.write_bytes(text.encode(encoding))
    return path


def _rows(folder: Path, delimiter: str = ",", split: bool = False) -> str:
    photos = folder / "photos"
    files = sorted(photos.rglob("*.jpg"))
    return "".join(
        delimiter.join([f.relative_to(photos).as_posix(), f.parent.name]
                       + ([str(i % 4 == 0)] if split else [])) + "\n"
        for i, f in enumerate(files))


def _explore(data: Path, folder: Path) -> list[str]:
    return ["explore", str(data), "--out", str(folder / "out"), *QUICK]


# Each bad case: what it builds (returning the command's arguments), and the message it must get.
def all_false(folder: Path) -> list[str]:
    _photos(folder)
    table = _csv(folder, "path,label,is_valid\n" + _rows(folder, split=True).replace("True",
                                                                                   "False"))
    return _explore(table, folder)


def link_back(folder: Path) -> list[str]:
    photos = _photos(folder)
    (photos / "all").symlink_to(".")
    return _explore(photos, folder)


def workbook(folder: Path) -> list[str]:
    table = _photos(folder) / "labels.csv"
    table.write_bytes(b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00" + bytes(200))
    return _explore(table, folder)


def two_labels(folder: Path) -> list[str]:
    _photos(folder)
    table = _csv(folder, "path,label\n" + _rows(folder) + "red/000.jpg,blue\n")
    return _explore(table, folder)


def header_only(folder: Path) -> list[str]:
    _photos(folder)
    return _explore(_csv(folder, "path,label\n"), folder)


def rows_are_folders(folder: Path) -> list[str]:
    _photos(folder)
    return _explore(_csv(folder, "path,label\nred,red\nblue,blue\n"), folder)


def empty_labels(folder: Path) -> list[str]:
    _photos(folder)
    table = _csv(folder, "path,label\n" + re.sub(r",\w+\n", ",\n", _rows(folder)))
    return _explore(table, folder)


def folder_named_csv(folder: Path) -> list[str]:
    (folder / "labels.csv").mkdir()
    return _explore(folder / "labels.csv", folder)


def a_photo_as_data(folder: Path) -> list[str]:
    return _explore(make_photo(folder / "rex.jpg"), folder)


def no_images_in_a_class(folder: Path) -> list[str]:
    photos = _photos(folder)
    (photos / "notes").mkdir()
    (photos / "notes" / "readme.txt").write_text("not a photo")
    (photos / "notes" / "data.csv").write_text("a,b\n")
    return _explore(photos, folder)


def valid_without_train_classes(folder: Path) -> list[str]:
    make_dataset(folder / "split" / "train", per_class=3)
    make_dataset(folder / "split" / "valid", per_class=2, classes=("purple", "orange"))
    return _explore(folder / "split", folder)


def one_photo_per_class(folder: Path) -> list[str]:
    return _explore(make_dataset(folder / "photos", per_class=1), folder)


def missing_data(folder: Path) -> list[str]:
    return _explore(folder / "nowhere", folder)


def missing_photo(folder: Path) -> list[str]:
    _photos(folder)
    return _explore(_csv(folder, "path,label\n" + _rows(folder) + "gone.jpg,red\n"), folder)


BAD: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "all_false": (all_false, "is_valid is False on every row, so no photo is held out"),
    "link_back": (link_back, "all is a link back to .*photos itself: every photo would be "
                             "counted again"),
    "workbook": (workbook, r'labels.csv is not a text table .*Save it as "CSV UTF-8"'),
    "two_labels": (two_labels, r"line \d+ \(red/000.jpg\) and line \d+ \(red/000.jpg\) are the "
                               "same photo with two labels, 'red' and 'blue'"),
    "header_only": (header_only, "lists no photos: it has a header but no rows"),
    "rows_are_folders": (rows_are_folders, "are folders, not photos, e.g. red"),
    "empty_labels": (empty_labels, r"12 row\(s\) have an empty label \(the first on line 2\)"),
    "folder_named_csv": (folder_named_csv, "labels.csv is a folder, not a CSV file"),
    "a_photo_as_data": (a_photo_as_data, "rex.jpg is a file but not a CSV"),
    "no_images_in_a_class": (no_images_in_a_class, "notes holds no images"),
    "valid_without_train_classes": (valid_without_train_classes,
                                    "valid holds no photo of a class in train/"),
    "one_photo_per_class": (one_photo_per_class, "has a single photo, so none can be held out"),
    "missing_data": (missing_data, "nowhere does not exist"),
    "missing_photo": (missing_photo, r"1 file\(s\) listed in .* do not exist .*gone.jpg"),
}


# The good cases: inputs people make that clearclass reads, each with what explore shows.
def excel_unicode_text(folder: Path) -> list[str]:
    """Excel's "Unicode text": UTF-16 LE with a BOM, tab-separated, named .txt."""
    _photos(folder)
    text = "Path\tLabel\r\n" + _rows(folder, "\t").replace("\n", "\r\n")
    return _explore(_csv(folder, text, "labels.txt", "utf-16"), folder)


def semicolons(folder: Path) -> list[str]:
    """Excel's CSV where ',' is the decimal mark (most of Europe), with an is_valid column."""
    _photos(folder)
    return _explore(_csv(folder, "path;label;is_valid\n" + _rows(folder, ";", split=True)),
                    folder)


def windows_1252(folder: Path) -> list[str]:
    """Excel's "CSV (Comma delimited)": Windows-1252, here with accented names, and one
    unreadable photo whose reason must read as words."""
    photos = _photos(folder)
    make_photo(photos / "rouge foncé" / "été.jpg", (150, 20, 20))
    make_photo(photos / "rouge foncé" / "hiver.jpg", (150, 20, 20), seed=1)
    (photos / "red" / "broken.jpg").write_bytes(b"not a photo at all")
    return _explore(_csv(folder, "path,label\n" + _rows(folder), encoding="cp1252"), folder)


def linked_class_folder(folder: Path) -> list[str]:
    """DATA/pink -> a class folder kept elsewhere (another disk)."""
    photos = _photos(folder)
    elsewhere = make_dataset(folder / "mnt", per_class=4, classes=("pink",))
    (photos / "pink").symlink_to(elsewhere / "pink")
    return _explore(photos, folder)


def verify_link_back(folder: Path) -> list[str]:
    photos = make_dataset(folder / "photos", per_class=2, size=(80, 70))
    (photos / "all").symlink_to(".")
    return ["verify", str(photos)]


GOOD: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "excel_unicode_text": (excel_unicode_text, r"3 classes \(CSV\).* total 9 3"),
    "semicolons": (semicolons, r"3 classes \(CSV with is_valid column\).* total 9 3"),
    "windows_1252": (windows_1252, r"4 classes \(CSV\).* rouge foncé rouge foncé 1 1 .*"
                                   r"total 11 4 1"),
    "linked_class_folder": (linked_class_folder, r"4 classes \(class folders\).* pink pink 3 1 "
                                                 r".* total 12 4"),
    "verify_link_back": (verify_link_back, r"6 photos checked; 1 linked folder .* all .* a link "
                                           "back to this folder itself"),
}


def _run(folder: Path, args: list[str]) -> Result:
    done = run_cli(*args, cwd=folder, env={"COLUMNS": "200"})  # wide enough for the tables
    return Result(folder, done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, Result]:
    """Every case, each in its own folder."""
    found = {}
    for name, (build, _) in {**BAD, **GOOD}.items():
        folder = tmp_path_factory.mktemp(name)
        found[name] = _run(folder, build(folder))
    return found


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_input_is_named_in_one_line_without_a_traceback(results, name):
    result, expected = results[name], BAD[name][1]
    assert "Traceback" not in result.stderr + result.stdout
    assert result.returncode == 1, result.said
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert re.search(expected, result.said), result.said


@pytest.mark.parametrize("name", sorted(GOOD))
def test_inputs_spreadsheets_and_links_make_work(results, name):
    result, expected = results[name], GOOD[name][1]
    assert "Traceback" not in result.stderr + result.stdout
    assert result.returncode == 0, result.said
    assert re.search(expected, result.said), result.said


def test_unreadable_reasons_read_as_words(results):
    with open(results["windows_1252"].folder / "out" / "unreadable.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[1:] == [[str(results["windows_1252"].folder / "photos" / "red" / "broken.jpg"),
                         "not an image, or a format Pillow cannot read"]]
