"""Where labelled photos come from: a folder per class, train/valid folders, or a CSV.

`find_photos(DATA)` recognises the layout and returns every photo with its class id and
whether it belongs to the validation set. Class ids are folder names (or CSV labels), kept
as they are; `display_name` makes them readable (`n02085620-Chihuahua` shows as
`Chihuahua`).

A labels CSV may give a photo several labels, or none (`dog;cat`, an empty cell): the set is
then multi-label (`task` "multi"), each photo has a set of `labels`, and the class ids are
every label that occurs (`task.split_labels` reads a cell).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import hashlib
import io
import json
import os
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from clearclass.errors import DataError, RunError
from clearclass.fileio import read_cell
from clearclass.task import DEFAULT_LABEL_DELIMITER, TASK_CHOICES, TASKS, split_labels

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".jfif"}
)
VALID_FOLDER_NAMES = ("valid", "val", "validation", "test")
# Stanford Dogs and ImageNet prefix each class folder with a WordNet id.
_WORDNET_PREFIX = re.compile(r"^n\d{8}[-_ ]+")
_TRUE_WORDS = frozenset({"1", "true", "yes", "y", "t", "valid", "validation"})
_FALSE_WORDS = frozenset({"0", "false", "no", "n", "f", "", "train"})
# A labels table: Excel names its "Unicode text" (UTF-16, tab-separated) .txt.
TABLE_SUFFIXES = (".csv", ".tsv", ".txt")
# Comma; tab (Excel's "Unicode text"); semicolon (Excel's CSV where ',' is the decimal mark).
_DELIMITERS = {",": "comma", "\t": "tab", ";": "semicolon"}
BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))
# Characters no spreadsheet writes into text (a trailing DOS end-of-file mark aside).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_KEEP_ONE_PLACE = ("Keep it in one place only (where one is reached through a link, remove the "
                   "link)")
_SAVE_AS = ('Save it as "CSV UTF-8" (in Excel: File > Save As > CSV UTF-8) with the columns '
            "path,label[,is_valid].")


@dataclass(frozen=True)
class Photo:
    """One labelled photo: its file, its class id, and whether it is held out.

    A photo of a multi-label set has `labels`, its set of labels (sorted; maybe empty), and
    its `class_id` is them written out (`label_text`), for messages only."""

    path: Path
    class_id: str
    is_valid: bool
    labels: tuple[str, ...] | None = None  # multi-label only; None: the one class_id

    @property
    def label_set(self) -> tuple[str, ...]:
        """The photo's labels whatever the task: (class_id,) for one label per photo."""
        return (self.class_id,) if self.labels is None else self.labels

    def with_split(self, is_valid: bool) -> Photo:
        return Photo(self.path, self.class_id, is_valid, self.labels)


def label_text(labels: tuple[str, ...]) -> str:
    """A multi-label photo's labels as one line, for messages: `cat; dog`, or `(none)`."""
    return "; ".join(labels) if labels else "(none)"


def multi_label_photo(path: Path, labels: tuple[str, ...], is_valid: bool) -> Photo:
    labels = tuple(sorted(set(labels)))
    return Photo(path, label_text(labels), is_valid, labels)


@dataclass
class PhotoSet:
    """Every labelled photo of a dataset, with its train/validation split."""

    photos: list[Photo]
    class_ids: list[str]
    layout: str
    root: Path
    notes: list[str] = field(default_factory=list)
    split_given: bool = False  # the data says which photos are held out (folders, is_valid)
    task: str = "single"  # "multi": each photo has a set of labels (task.py)
    # A multi-label CSV's: what its label cells were split on (None: any whitespace), so
    # that a cell written back (`clean --apply`) reads as the others.
    label_delimiter: str | None = None

    @property
    def train(self) -> list[Photo]:
        return [p for p in self.photos if not p.is_valid]

    @property
    def valid(self) -> list[Photo]:
        return [p for p in self.photos if p.is_valid]

    @property
    def display_names(self) -> list[str]:
        return display_names(self.class_ids)

    def counts(self) -> dict[str, tuple[int, int]]:
        """Photos per class id (multi-label: photos with the label), as (train, valid)."""
        train = Counter(c for p in self.photos if not p.is_valid for c in p.label_set)
        valid = Counter(c for p in self.photos if p.is_valid for c in p.label_set)
        return {c: (train[c], valid[c]) for c in self.class_ids}

    def targets(self, photos: list[Photo] | None = None) -> np.ndarray:
        """What the network learns for each of `photos` (default: all): its class index, or
        (multi-label) a multi-hot row over `class_ids`."""
        photos = self.photos if photos is None else photos
        index = {c: i for i, c in enumerate(self.class_ids)}
        if self.task != "multi":
            return np.array([index[p.class_id] for p in photos], dtype=np.int64)
        # uint8: 1 byte per (photo, label), so many labels do not cost 8 times the memory.
        rows = np.zeros((len(photos), len(self.class_ids)), dtype=np.uint8)
        for row, photo in zip(rows, photos):
            row[[index[c] for c in photo.label_set]] = 1
        return rows

    def without(self, unreadable: set[Path]) -> PhotoSet:
        """The same set minus the photos that could not be decoded.

        A class left with no photo at all, or with no training photo, is an error that names
        its folder: training on a class that cannot be seen would only produce a wrong head.
        So is a set left with no validation photo: its accuracy could not be measured.
        """
        kept = [p for p in self.photos if p.path not in unreadable]
        present = {c for p in kept for c in p.label_set}
        trained = {c for p in kept if not p.is_valid for c in p.label_set}
        for class_id in self.class_ids:
            if class_id not in present:
                raise DataError(
                    f"Class '{class_id}' has no readable image: every "
                    f"{_photos_of(self, class_id)} failed to decode (see skipped.csv). "
                    + ("Replace the files or remove the label." if self.task == "multi"
                       else "Replace the files or remove the folder.")
                )
            if class_id not in trained:
                raise DataError(
                    f"Class '{class_id}' has no readable training photo: every training "
                    f"{_photos_of(self, class_id)} failed to decode (see skipped.csv). "
                    "Replace them or add readable photos."
                )
        if not any(p.is_valid for p in kept):
            held_out = len(self.valid)
            raise DataError(
                (f"None of the {held_out} validation photos could be decoded (see skipped.csv)"
                 if held_out else "No photo is held out for validation")
                + ", so accuracy could not be measured. Replace the unreadable files or add "
                "readable photos to validate on."
            )
        return PhotoSet(kept, self.class_ids, self.layout, self.root, list(self.notes),
                        self.split_given, self.task, self.label_delimiter)


def data_name(data: object) -> str | None:
    """The name a run's photos go by: their folder's name (a labels CSV: its folder's), read
    from the path as written, a Windows one too; None for no path. Resolve a relative path
    first (`.` has no name).

    Example:
        print(data_name("/home/me/dogs/labels.csv"), data_name("photos/dogs"))  # dogs dogs
    """
    if not isinstance(data, str) or not data.strip():
        return None
    path = PureWindowsPath(data) if "\\" in data else PurePosixPath(data)
    if path.suffix.lower() in (".csv", ".tsv") and path.parent.name:
        path = path.parent
    return path.name or None


def display_name(class_id: str) -> str:
    """A class id as people read it: no WordNet prefix, spaces for underscores."""
    name = _WORDNET_PREFIX.sub("", class_id).replace("_", " ").strip()
    return name or class_id


def display_names(class_ids: list[str]) -> list[str]:
    """Display names for class ids, falling back to the id where two names would collide."""
    names = [display_name(c) for c in class_ids]
    seen = Counter(names)
    return [name if seen[name] == 1 else cid for name, cid in zip(names, class_ids)]


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def find_photos(data: str | Path, validation_fraction: float = 0.2, seed: int = 42,
                task: str = "auto", label_delimiter: str | None = None) -> PhotoSet:
    """Find the labelled photos under DATA and split them into train and validation.

    DATA is one of:
    - a folder of class folders, `DATA/<class>/<photo>` (split by `validation_fraction`,
      stratified);
    - a folder holding `train/<class>/` and one of `valid/`, `val/`, `validation/`, `test/`
      (used as given);
    - a CSV file `path,label[,is_valid]`, paths relative to the CSV's folder (UTF-8 or
      UTF-16 or Windows-1252, separated by commas, tabs or semicolons, as spreadsheets
      save it).

    Linked folders and files are followed, each file counted once: the same file under two
    labels, or in both train and validation, is an error, and so is a class folder that
    links back to DATA. A set with no validation photo is an error too.

    `task` (task.TASK_CHOICES): with "auto", a CSV whose label cells hold several labels
    (separated by `label_delimiter`, by default ';') or none makes a multi-label set, and so
    does one whose cells with spaces all list labels that stand alone in other cells (`dog
    cat` beside `dog` and `cat`: fastai's label_delim=' '); "multi"
    makes one from any CSV (its cells split on ';' if any has one, else on spaces, as
    fastai's label_delim); "single" reads each cell as one label.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise DataError("validation_fraction must be between 0 and 1 (exclusive); got "
                        f"{validation_fraction}.")
    if task not in TASK_CHOICES:
        raise DataError(f"task must be one of {', '.join(TASK_CHOICES)}; got {task!r}.")
    root = Path(data).expanduser()
    with _reading(root):
        if _is_table(root):
            photo_set = _from_csv(root, validation_fraction, seed, task, label_delimiter)
        else:
            if task == "multi":
                raise DataError(
                    f"{root} is a folder of class folders, which gives each photo one class; "
                    "several labels per photo come from a CSV with columns path,label"
                    "[,is_valid] whose label cells list them (dog;cat). Write one, or drop "
                    "--task multi.")
            photo_set = _from_folders(root, validation_fraction, seed)
    _check_classes(photo_set)
    if not photo_set.valid:  # each layout says why first; this is the last guard
        raise DataError(f"No photo of {root} is held out for validation, so accuracy could "
                        "not be measured. Add photos: at least 2 per class.")
    return photo_set


def list_photos(data: str | Path, task: str = "single",
                label_delimiter: str | None = None) -> PhotoSet:
    """Every photo of DATA with its label, as the data gives them, under none of training's
    rules: any number of classes, any number of photos in each.

    DATA is read as `find_photos` reads it (the same layouts, links and CSV dialects, each
    file once), but nothing is split: `is_valid` is the data's own split where it gives one
    (`split_given`: valid/ or test/ beside train/, an is_valid column; their classes are kept
    whether or not train/ has them), else False for every photo. What `evaluate --data`
    reads a test set with.

    `task` is the model's: with "multi", a CSV's label cells are sets of labels (split on
    `label_delimiter`, or as `find_photos` does with --task multi: on ';' when a cell holds
    one, else on spaces), maybe empty, and the set is multi-label; a folder's photos keep
    their one class each (a note says so).
    """
    if task not in TASKS:
        raise DataError(f"task must be one of {', '.join(TASKS)}; got {task!r}.")
    root = Path(data).expanduser()
    notes: list[str] = []
    with _reading(root):
        if _is_table(root):
            listed, has_split, task, _ = _csv_photos(root, task, label_delimiter, notes)
            photos = _one_each(listed, notes, "Delete one of the two rows", prefix=f"{root}: ")
            layout, root, given = ("CSV with is_valid column" if has_split else "CSV",
                                   root.parent, has_split)
        else:
            split = _split_folders(root)
            if split is not None:
                train_dir, valid_dir = split
                found = (_photos_in_class_folders(train_dir, False, root)
                         + _photos_in_class_folders(valid_dir, True, root))
                layout = f"split folders ({train_dir.name}/ and {valid_dir.name}/)"
            else:
                folder = _class_folders_root(root, notes)
                found = _photos_in_class_folders(folder, False, root)
                layout, root = "class folders", folder
            photos = _one_each([(p, real, str(p.path)) for p, real in found], notes,
                               _KEEP_ONE_PLACE)
            given = split is not None
            if task == "multi":
                notes.append(f"{data} is a folder of class folders: each photo is taken to "
                             "have exactly one label, its folder's. A CSV (path,label) can "
                             "give a photo several labels, or none.")
                task = "single"
    return PhotoSet(photos, sorted({c for p in photos for c in p.label_set}), layout, root,
                    notes, split_given=given, task=task)


@contextlib.contextmanager
def _reading(root: Path) -> Iterator[None]:
    """A file that cannot be read while DATA is read is one error naming it."""
    try:
        yield
    except OSError as e:
        raise DataError(f"Cannot read {e.filename or root}: {e.strerror or e}. Check that it "
                        "is there and that you may read it.") from None


def _is_table(root: Path) -> bool:
    """Whether DATA is a labels table (True) or a folder (False); an error if neither."""
    if not root.exists():
        raise DataError(
            f"{root} does not exist. Pass a folder of class folders or a CSV file.")
    if root.is_file():
        if root.suffix.lower() not in TABLE_SUFFIXES:
            raise DataError(
                f"{root} is a file but not a CSV. Pass a folder of class folders "
                "(DATA/<class>/<photo>.jpg) or a CSV with columns path,label[,is_valid]."
            )
        return True
    if not root.is_dir():
        raise DataError(f"{root} is neither a folder nor a file. Pass a folder of class "
                        "folders or a CSV file.")
    if root.suffix.lower() in TABLE_SUFFIXES and not _subfolders(root):
        raise DataError(f"{root} is a folder, not a CSV file. Pass the CSV file itself, "
                        "or a folder of class folders.")
    return False


def _split_folders(root: Path) -> tuple[Path, Path] | None:
    """DATA's train/ and its valid/ (val/, validation/, test/) folder, when it has both."""
    names = {d.name.lower(): d for d in _subfolders(root)}
    train_dir = names.get("train")
    valid_dir = next((names[n] for n in VALID_FOLDER_NAMES if n in names), None)
    return (train_dir, valid_dir) if train_dir is not None and valid_dir is not None else None


def _class_folders_root(root: Path, notes: list[str]) -> Path:
    """The folder that holds the class folders: DATA, or its Images/ (Stanford Dogs)."""
    subfolders = _subfolders(root)
    # Stanford Dogs (and its Kaggle copy) keep the class folders one level down, in Images/.
    if not _has_images_below(subfolders):
        nested = next((d for d in subfolders if d.name.lower() == "images"), None)
        if nested is not None and _subfolders(nested):
            notes.append(f"Using the class folders in {nested} (Stanford Dogs layout).")
            return nested
    return root


def _from_folders(root: Path, validation_fraction: float, seed: int) -> PhotoSet:
    split = _split_folders(root)
    if split is not None:
        train_dir, valid_dir = split
        train = _photos_in_class_folders(train_dir, False, root)
        valid = _photos_in_class_folders(valid_dir, True, root)
        class_ids = sorted({p.class_id for p, _ in train})
        unknown = sorted({p.class_id for p, _ in valid} - set(class_ids))
        notes = []
        if unknown:
            # A validation class the model never trains on can only be scored as wrong.
            valid = [(p, real) for p, real in valid if p.class_id not in unknown]
            notes.append(
                f"Ignored {len(unknown)} class folder(s) in {valid_dir.name}/ with no "
                f"counterpart in train/: {', '.join(unknown[:5])}"
            )
        photos = _one_each([(p, real, str(p.path)) for p, real in train + valid], notes,
                           _KEEP_ONE_PLACE)
        if not any(p.is_valid for p in photos):
            raise DataError(
                f"{valid_dir} holds no photo of a class in {train_dir.name}/, so accuracy "
                f"could not be measured. Put some photos of each class in "
                f"{valid_dir}/<class>/, with the class folder names of {train_dir.name}/."
            )
        layout = f"split folders ({train_dir.name}/ and {valid_dir.name}/)"
        return PhotoSet(photos, class_ids, layout, root, notes, split_given=True)

    notes: list[str] = []
    root_for_classes = _class_folders_root(root, notes)
    listed = _photos_in_class_folders(root_for_classes, False, root)
    photos = _one_each([(p, real, str(p.path)) for p, real in listed], notes,
                       _KEEP_ONE_PLACE)
    photos = _stratified_split(photos, validation_fraction, seed, notes)
    if not any(p.is_valid for p in photos):
        raise _too_few_to_validate(root_for_classes)
    class_ids = sorted({p.class_id for p in photos})
    return PhotoSet(photos, class_ids, "class folders", root_for_classes, notes)


def _too_few_to_validate(source: Path) -> DataError:
    return DataError(
        f"Every class of {source} has a single photo, so none can be held out for validation "
        "and accuracy could not be measured. Add photos: at least 2 per class, ideally 20 "
        "or more."
    )


def _one_each(listed: list[tuple[Photo, Path, str]], notes: list[str], fix: str,
              prefix: str = "") -> list[Photo]:
    """Each file once: `listed` holds (photo, its real path, where it was listed).

    The same file twice with the same label and split is kept once (a note); with two
    labels, or once for training and once for validation, it is an error naming both places.
    """
    first: dict[Path, tuple[Photo, str]] = {}
    kept, repeated = [], []
    for photo, real, where in listed:
        if real not in first:
            first[real] = (photo, where)
            kept.append(photo)
            continue
        other, other_where = first[real]
        if other.class_id != photo.class_id:
            raise DataError(
                f"{prefix}{other_where} and {where} are the same photo with two labels, "
                f"'{_one_line(other.class_id)}' and '{_one_line(photo.class_id)}'; a photo can "
                f"have only one. {fix}."
            )
        if other.is_valid != photo.is_valid:
            raise DataError(
                f"{prefix}{other_where} and {where} are the same photo, once for training "
                "and once for validation: validation would score a photo the model trained "
                f"on. {fix}."
            )
        repeated.append(where)
    if repeated:
        notes.append(f"{len(repeated)} photo(s) were found twice with the same label (e.g. "
                     f"{prefix}{repeated[0]}); each is used once.")
    return kept


def _photos_in_class_folders(folder: Path, is_valid: bool,
                             data: Path) -> list[tuple[Photo, Path]]:
    """The photos of each class folder in `folder` (of DATA `data`), with their real paths."""
    class_dirs = _subfolders(folder)
    loose = [p for p in folder.iterdir() if p.is_file() and is_image_file(p)]
    if not class_dirs:
        hint = (
            f" It holds {len(loose)} photos directly; put each class's photos in its own "
            f"subfolder: {folder}/<class>/<photo>.jpg."
            if loose
            else ""
        )
        raise DataError(f"No class folders found in {folder}.{hint}")
    data_real = Path(os.path.realpath(data))
    reals = {d: Path(os.path.realpath(d)) for d in class_dirs}
    for class_dir, real in reals.items():
        if data_real.is_relative_to(real):
            raise _link_back(class_dir, real, data)
    for class_dir, real in reals.items():
        for other, other_real in reals.items():
            if other == class_dir or not real.is_relative_to(other_real):
                continue
            if real == other_real and other.is_symlink() and not class_dir.is_symlink():
                class_dir, other = other, class_dir  # name the link
            where = "the same folder as" if real == other_real else "a folder inside"
            raise DataError(
                f"Class folder {class_dir} leads to {real}, {where} class folder {other}: "
                "its photos would have two labels. Remove the link, or make it lead to a "
                "folder of its own."
            )
    listed = []
    for class_dir in class_dirs:
        found, links = scan_images(class_dir, data)
        back = next((link for link in links if link.why == LINK_BACK), None)
        if back is not None:
            raise _link_back(back.path, back.target, data)
        if not found:
            raise DataError(
                f"Class folder {class_dir} holds no images (looked for "
                f"{', '.join(sorted(IMAGE_EXTENSIONS))}). Add photos to it or remove it."
            )
        listed.extend((Photo(f.path, class_dir.name, is_valid), f.real) for f in found)
    return listed


def _link_back(link: Path, target: Path, data: Path) -> DataError:
    where = (f"a link back to {data} itself" if Path(os.path.realpath(data)) == target
             else f"a link to {target}, a folder that holds {data}")
    return DataError(f"{link} is {where}: every photo would be counted again, under another "
                     "label. Remove the link.")


LINK_BACK, LINK_INSIDE, LINK_AGAIN = "back", "inside", "again"


@dataclass(frozen=True)
class Found:
    """An image file found by `scan_images`: its path as listed, and its real path (every
    link resolved), one for all the paths that lead to the same file."""

    path: Path
    real: Path


@dataclass(frozen=True)
class FolderLink:
    """A linked folder `scan_images` did not follow: where it leads, why (`LINK_*`), and for
    LINK_AGAIN the path it was scanned as."""

    path: Path
    target: Path
    why: str
    scanned_as: Path | None = None


def scan_images(top: Path, root: Path | None = None,
                follow_inside: bool = True) -> tuple[list[Found], list[FolderLink]]:
    """Every image file under `top`, in path order, each folder scanned once.

    Linked folders are followed (Python 3.11's `rglob` skips them below its start), so a
    class kept elsewhere works: `DATA/beagle -> /mnt/photos/beagle`. Not followed, and
    returned: a linked folder that leads to `root` (default `top`) or a folder above it
    (LINK_BACK: its photos would be found again, in a loop), one that leads inside `root`
    when `follow_inside` is False (LINK_INSIDE), and one that leads to a folder scanned
    already (LINK_AGAIN).
    """
    root_real = Path(os.path.realpath(root if root is not None else top))
    top_real = Path(os.path.realpath(top))
    found: list[Found] = []
    links: list[FolderLink] = []
    visited = {top_real: top}  # real folder -> the path it was scanned as
    stack = [(top, top_real)]
    while stack:
        folder, real = stack.pop()
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda e: e.name)
        below = []
        for entry in entries:
            path = folder / entry.name
            try:
                is_link, is_dir = entry.is_symlink(), entry.is_dir()
                is_file = not is_dir and entry.is_file()
            except OSError:
                continue
            if is_file:
                if is_image_file(path):
                    found.append(Found(path, Path(os.path.realpath(path)) if is_link
                                       else real / entry.name))
                continue
            if not is_dir:
                continue
            target = Path(os.path.realpath(path)) if is_link else real / entry.name
            if not is_link:
                if target not in visited:
                    visited[target] = path
                    below.append((path, target))
                continue
            if root_real.is_relative_to(target):
                why = LINK_BACK
            elif not follow_inside and target.is_relative_to(root_real):
                why = LINK_INSIDE
            elif target in visited:
                why = LINK_AGAIN
            else:
                visited[target] = path
                below.append((path, target))
                continue
            links.append(FolderLink(path, target, why, visited.get(target)))
        stack.extend(reversed(below))
    found.sort(key=lambda f: f.path)
    return found, links


def _from_csv(csv_path: Path, validation_fraction: float, seed: int, task: str = "auto",
              label_delimiter: str | None = None) -> PhotoSet:
    base = csv_path.parent
    notes: list[str] = []
    listed, has_split, task, label_delimiter = _csv_photos(csv_path, task, label_delimiter,
                                                           notes)
    photos = _one_each(listed, notes, "Delete one of the two rows", prefix=f"{csv_path}: ")
    if has_split:
        marked = sum(p.is_valid for p in photos)
        train_classes = {c for p in photos if not p.is_valid for c in p.label_set}
        unknown = sorted({c for p in photos if p.is_valid for c in p.label_set}
                         - train_classes)
        if unknown and task == "multi":
            # The photo stays, scored on the labels the model learns.
            photos = [p if p.labels is not None and not set(p.labels) & set(unknown) else
                      multi_label_photo(p.path, tuple(c for c in p.labels if c not in unknown),
                                        p.is_valid) for p in photos]
            notes.append(f"Ignored label(s) with no training photo, only validation ones: "
                         f"{', '.join(_one_line(c) for c in unknown[:5])}. The model cannot "
                         "learn them; their photos are scored on their other labels.")
        elif unknown:
            photos = [p for p in photos if p.class_id not in unknown]
            notes.append(f"Ignored validation-only label(s): {', '.join(unknown[:5])}")
        if not any(p.is_valid for p in photos):
            why = ("is_valid is False on every row" if not marked else
                   "every photo marked is_valid has a label with no training photo")
            raise DataError(
                f"{csv_path}: {why}, so no photo is held out and accuracy could not be "
                "measured. Set is_valid to True for about 1 in 5 photos of each label, or "
                "delete the is_valid column to hold out validation_fraction of each label."
            )
        layout = "CSV with is_valid column"
    else:
        photos = _stratified_split(photos, validation_fraction, seed, notes)
        if not any(p.is_valid for p in photos):
            raise _too_few_to_validate(csv_path)
        layout = "CSV"
    class_ids = sorted({c for p in photos for c in p.label_set})
    if task == "multi":
        layout = f"multi-label {layout}"
        _check_multi_labels(csv_path, photos, class_ids, notes)
    return PhotoSet(photos, class_ids, layout, base, notes, split_given=has_split, task=task,
                    label_delimiter=label_delimiter if task == "multi" else None)


def _label_task(cells: list[str], task: str, delimiter: str | None,
                notes: list[str]) -> tuple[str, str | None]:
    """The task of a labels table with these label cells, and what splits them (None:
    whitespace): `find_photos` says how `task` "auto" decides."""
    if task == "single":
        return task, delimiter
    chosen = delimiter  # None: not chosen, so spaces may turn out to separate the labels
    if delimiter is None:
        if task == "multi" and not any(DEFAULT_LABEL_DELIMITER in c for c in cells):
            return task, None  # fastai's label_delim=' '
        delimiter = DEFAULT_LABEL_DELIMITER
    if task == "auto":
        several = next((c for c in cells if len(split_labels(c, delimiter)) != 1), None)
        # No label at all is a table not filled in, not a multi-label one: _csv_photos says so.
        if not any(c.strip() for c in cells):
            return "single", delimiter
        if chosen is None and not any(DEFAULT_LABEL_DELIMITER in c for c in cells):
            spaced = _spaced_sets(cells)
            if spaced:  # fastai's label_delim=' ', unambiguous: every word is a label alone
                notes.append(f"Read as multi-label with labels separated by spaces: every "
                             f"cell with spaces lists labels that stand alone in other cells "
                             f"('{_one_line(spaced)}'). Each photo has a set of labels, maybe "
                             "empty; --task single reads each cell as one label.")
                return "multi", None
        if several is None:
            _note_spaced_labels(cells, notes)
            return "single", delimiter
        notes.append("Read as multi-label: "
                     + (f"a label cell lists several labels ('{_one_line(several)}')" if
                        several.strip() else "some photos have an empty label cell (no label)")
                     + ". Each photo has a set of labels, maybe empty; --task single reads "
                       "each cell as one label.")
    return "multi", delimiter


def _spaced_sets(cells: list[str]) -> str | None:
    """A cell that shows the table separates labels with spaces, or None: the first cell
    with several words when every such cell's words are each a whole cell elsewhere (`dog
    cat` beside `dog` and `cat`). One word that never stands alone (`golden retriever`
    without `golden`) keeps the table single-label, as a label with a space in it."""
    alone = {c.strip() for c in cells if len(c.split()) == 1}
    spaced = sorted({c for c in cells if len(c.split()) > 1})
    if spaced and all(w in alone for c in spaced for w in c.split()):
        return spaced[0]
    return None


def _note_spaced_labels(cells: list[str], notes: list[str]) -> None:
    """A note when labels with spaces look like several labels (`dog cat` where `dog` and
    `cat` are labels too): fastai's multi-label CSVs separate labels with spaces."""
    labels = set(cells)
    spaced = next((c for c in sorted(labels) if len(c.split()) > 1
                   and all(w in labels for w in c.split())), None)
    if spaced:
        notes.append(f"The label '{_one_line(spaced)}' reads as one label, though its words "
                     "are labels too. If the cells list several labels separated by spaces, "
                     "pass --label-delimiter ' ' (or --task multi).")


def _check_multi_labels(csv_path: Path, photos: list[Photo], class_ids: list[str],
                        notes: list[str]) -> None:
    """What a multi-label set cannot be trained on (an error), and what looks like a mistake
    in its labels (a note each)."""
    sets = {p.labels for p in photos}
    if len(sets) == 1:
        raise DataError(
            f"Every photo of {csv_path} has the same labels ({label_text(next(iter(sets)))}), "
            "so there is nothing to tell apart. Label each photo with the labels it shows.")
    train = [p for p in photos if not p.is_valid]
    counts = Counter(c for p in train for c in p.label_set)
    always = [c for c in class_ids if counts[c] == len(train)]
    if always:
        notes.append(f"Every training photo has the label(s) {', '.join(always[:5])}: the "
                     "model will learn to give them always.")
    by_case: dict[str, list[str]] = defaultdict(list)
    for c in class_ids:
        by_case[c.casefold()].append(c)
    for same in (v for v in by_case.values() if len(v) > 1):
        notes.append(f"The labels {' and '.join(repr(c) for c in same[:3])} differ only in "
                     "case: they are learned as different labels. If they are one, write "
                     "them alike in the CSV.")
    # Two labels on exactly the same photos: a label with the delimiter inside it, split.
    holders: dict[tuple[Path, ...], list[str]] = defaultdict(list)
    for c in class_ids:
        holders[tuple(p.path for p in photos if c in p.label_set)].append(c)
    together = next((v for k, v in holders.items() if len(v) > 1 and len(k) > 1), None)
    if together:
        notes.append(f"The labels {', '.join(repr(c) for c in together[:3])} are on exactly "
                     f"the same photos: if they are one label that holds the delimiter, "
                     "choose another --label-delimiter.")


def _csv_photos(csv_path: Path, task: str = "single", label_delimiter: str | None = None,
                notes: list[str] | None = None,
                ) -> tuple[list[tuple[Photo, Path, str]], bool, str, str | None]:
    """The photos a labels table lists (each with its real path and its line), whether it
    has an is_valid column, its task ("single" or "multi", `_label_task`) and what splits
    its label cells (None: whitespace)."""
    base = csv_path.parent
    header, rows, delimiter = read_table(csv_path)
    columns = [column_name(c) for c in header]
    if "path" not in columns or "label" not in columns:
        raise DataError(
            f"{csv_path} must have a header with columns path,label[,is_valid]; "
            f"found {_one_line(', '.join(c for c in columns if c)) or 'no header'}."
        )
    twice = next((c for c in ("path", "label", "is_valid") if columns.count(c) > 1), None)
    if twice:
        raise DataError(f"{csv_path} has {columns.count(twice)} columns named {twice}; keep "
                        "one.")
    at = {name: columns.index(name) for name in ("path", "label", "is_valid") if name in columns}
    has_split = "is_valid" in at
    # What splits a label cell: not `delimiter`, which splits the table's cells (the
    # message about a row with too many cells names that one).
    task, label_split = _label_task(
        [read_cell(row[at["label"]]) if at["label"] < len(row) else "" for _, row in rows],
        task, label_delimiter, notes if notes is not None else [])
    listed, missing, folders, empty = [], [], [], []
    for line, row in rows:
        if len(row) > len(columns) and any(cell.strip() for cell in row[len(columns):]):
            raise DataError(
                f"{csv_path}, line {line}: {len(row)} fields where the header has "
                f"{len(columns)}. Put a path or label that holds a {_DELIMITERS[delimiter]} in "
                "double quotes."
            )
        cells = {name: row[i].strip() if i < len(row) else "" for name, i in at.items()}
        rel, class_id = cells["path"], read_cell(cells["label"])
        if not rel or not (class_id or task == "multi"):
            empty.append((line, "path" if not rel else "label"))
            continue
        path, real, kind = listed_file(base, rel)
        if kind != "file":
            (folders if kind == "folder" else missing).append(rel)
            continue
        is_valid = (parse_is_valid(cells["is_valid"], f"{csv_path}, line {line}")
                    if has_split else False)
        photo = (multi_label_photo(path, split_labels(class_id, label_split), is_valid)
                 if task == "multi" else Photo(path, class_id, is_valid))
        listed.append((photo, real, f"line {line} ({_one_line(rel)})"))
    if empty:
        line, what = empty[0]
        raise DataError(
            f"{csv_path}: {len(empty)} row(s) have an empty {what} (the first on line {line}). "
            "Give every photo a path and a label, or delete those rows."
        )
    if folders:
        raise DataError(
            f"{len(folders)} path(s) listed in {csv_path} are folders, not photos, e.g. "
            f"{_one_line(folders[0])}. List one photo file per row, or pass a folder of class "
            "folders as DATA instead of the CSV."
        )
    if missing:
        raise DataError(
            f"{len(missing)} file(s) listed in {csv_path} do not exist (paths are relative to "
            f"{base}), e.g. {_one_line(missing[0])}."
        )
    if not listed:
        raise DataError(f"{csv_path} lists no photos: it has a header but no rows. Add one row "
                        "per photo: its path and its label.")
    return listed, has_split, task, label_split


def read_table(csv_path: Path) -> tuple[list[str], list[tuple[int, list[str]]], str]:
    """The header, the rows with their line numbers, and the delimiter of a labels table."""
    text = _table_text(csv_path, csv_path.read_bytes())
    delimiter = sniff_delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    line = 1  # where the next row starts (a quoted cell may hold line breaks)
    try:
        for row in reader:
            if any(cell.strip() for cell in row):  # blank lines aside
                if header is None:
                    header = row
                else:
                    rows.append((line, row))
            line = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"{csv_path}, line {line}: {e}. {_SAVE_AS}") from None
    return header or [], rows, delimiter


def _table_text(csv_path: Path, data: bytes) -> str:
    """A table's bytes as text: UTF-8 or UTF-16 (with or without a byte-order mark),
    UTF-32 with one, or Windows-1252 (Excel's "CSV (Comma delimited)")."""
    binary = DataError(f"{csv_path} is not a text table (it holds binary data: a workbook, an "
                       f"image?). {_SAVE_AS}")
    encoding = next((name for bom, name in BOMS if data.startswith(bom)), None)
    if encoding is None and b"\0" in data:
        encoding = utf16_without_bom(data)
        if encoding is None:
            raise binary
    try:
        if encoding is not None:
            text = data.decode(encoding)
        else:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = data.decode("cp1252")
    except UnicodeDecodeError:
        raise DataError(f"{csv_path} is not in an encoding clearclass reads (UTF-8, UTF-16 or "
                        f"Windows-1252). {_SAVE_AS}") from None
    text = text.lstrip("\ufeff").rstrip("\x1a")
    if _CONTROL.search(text):
        raise binary
    return text


def utf16_without_bom(data: bytes) -> str | None:
    """UTF-16 with no byte-order mark, told by its zero bytes: mostly text in Latin script."""
    pairs = len(data) // 2
    if len(data) % 2 or not pairs:
        return None
    even, odd = data[0::2].count(0), data[1::2].count(0)
    if odd > 0.4 * pairs and not even:
        return "utf-16-le"
    if even > 0.4 * pairs and not odd:
        return "utf-16-be"
    return None


def sniff_delimiter(text: str) -> str:
    """The delimiter that makes the header name a path and a label column; else the one that
    splits it most (a comma where none does, so that the error lists its columns)."""
    first = next((line for line in text.splitlines() if line.strip()), "")

    def header(delimiter: str) -> list[str]:
        try:
            return [column_name(c) for c in next(csv.reader([first], delimiter=delimiter), [])]
        except csv.Error:
            return []

    for delimiter in _DELIMITERS:
        columns = header(delimiter)
        if "path" in columns and "label" in columns:
            return delimiter
    return max(_DELIMITERS, key=lambda d: len(header(d)))


def _one_line(text: str, limit: int = 80) -> str:
    """Text from a file as a one-line message shows it: control characters escaped, cut
    short."""
    text = _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def column_name(cell: str) -> str:
    """A header cell as matched: case, spaces around it, a stray BOM aside; "is valid" and
    "is-valid" are "is_valid"."""
    return re.sub(r"[\s_-]+", "_", cell.replace("\ufeff", "").strip().lower())


def listed_file(base: Path, rel: str) -> tuple[Path, Path, str]:
    """The file a CSV row names, its real path, and whether it is a "file", a "folder" or
    "missing".

    Relative paths are relative to the CSV's folder; Windows' backslashes are understood, and
    so are the escapes of names that are not UTF-8 (`fileio.csv_cell`: caf\\xe9.jpg)."""
    candidates = list(dict.fromkeys([read_cell(rel), rel]))
    candidates += [c.replace("\\", "/") for c in candidates if "\\" in c]
    for candidate in candidates:
        try:
            path = Path(candidate)
            real = Path(os.path.realpath(base / path))  # base / an absolute path: that path
            if not path.is_absolute():
                path = real
            if path.is_file():
                return path, real, "file"
            if path.is_dir():
                return path, real, "folder"
        except (OSError, ValueError):
            continue
    return Path(rel), Path(rel), "missing"


def parse_is_valid(value: str | None, where: str) -> bool:
    """An `is_valid` cell as written by people and spreadsheets: True/False, 1/0, yes/no."""
    word = (value or "").strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise DataError(f"{where}: is_valid must be True/False or 1/0; got {value!r}.")


def _stratified_split(
    photos: list[Photo], validation_fraction: float, seed: int, notes: list[str]
) -> list[Photo]:
    """Hold out `validation_fraction` of each class, so that every class is scored on validation.

    Multi-label photos are grouped by their rarest label (those with none together), the
    usual approximation of stratifying on every label: each label's rarest occurrences are
    spread over both sides, and a label on one photo only stays for training."""
    by_class: dict[str, list[Photo]] = defaultdict(list)
    frequency = Counter(c for p in photos for c in p.label_set)
    for p in photos:
        key = p.class_id if p.labels is None else min(
            p.labels, key=lambda c: (frequency[c], c), default="")
        by_class[key].append(p)
    rng = random.Random(seed)
    result = []
    for class_id in sorted(by_class):
        members = sorted(by_class[class_id], key=lambda p: str(p.path))
        rng.shuffle(members)
        n_valid = round(len(members) * validation_fraction)
        if len(members) >= 2:
            n_valid = min(max(n_valid, 1), len(members) - 1)
        else:
            n_valid = 0
            if members[0].labels is None:
                notes.append(f"Class '{class_id}' has only one photo: it is used for training "
                             "only.")
            elif class_id:
                notes.append(f"The label '{_one_line(class_id)}' is on one photo only: it is "
                             "used for training only.")
        result.extend(p.with_split(i < n_valid) for i, p in enumerate(members))
    return result


def _check_classes(photo_set: PhotoSet) -> None:
    if len(photo_set.class_ids) < 2:
        found = (
            f"only class '{photo_set.class_ids[0]}'" if photo_set.class_ids else "no class"
        )
        raise DataError(
            f"Found {found} in {photo_set.root}; a classifier needs at least 2. Put each "
            f"class's photos in its own folder: {photo_set.root}/<class>/<photo>.jpg."
        )
    if photo_set.task == "multi" and photo_set.class_ids:
        return  # one label is a classifier too: the photos with it and those without
    trained = {c for p in photo_set.photos if not p.is_valid for c in p.label_set}
    untrained = [c for c in photo_set.class_ids if c not in trained]
    if untrained:
        raise DataError(
            f"Class '{untrained[0]}' has no training photos in {photo_set.root}, only "
            "validation ones. Add training photos for it."
        )


def _photos_of(photo_set: PhotoSet, class_id: str) -> str:
    """Where a class's photos are, for messages: "file in FOLDER", or "photo labelled X"."""
    if photo_set.task == "multi":
        return f"photo labelled '{_one_line(class_id)}'"
    for p in photo_set.photos:
        if p.class_id == class_id:
            return f"file in {p.path.parent}"
    return f"file in {photo_set.root / class_id}"


def _subfolders(folder: Path) -> list[Path]:
    return sorted(
        d for d in folder.iterdir() if d.is_dir() and not d.name.startswith((".", "__"))
    )


def _has_images_below(folders: list[Path]) -> bool:
    return any(is_image_file(p) for d in folders for p in d.iterdir() if p.is_file())


SPLIT_FILE = "split.csv"
# RUN/config.json records split.csv's SHA-256 under this key (runs trained since it does).
SPLIT_CHECKSUM = "split_sha256"


def split_checksum(run_dir: Path) -> str:
    """The SHA-256 of RUN/split.csv as it is on disk: what config.json records."""
    return hashlib.sha256((Path(run_dir) / SPLIT_FILE).read_bytes()).hexdigest()


def split_label_cell(photo: Photo) -> str:
    """A photo's label as split.csv writes it: its class id, or (multi-label) its labels as
    a JSON list, which no label's characters can break."""
    return photo.class_id if photo.labels is None else json.dumps(list(photo.labels),
                                                                    ensure_ascii=False)


def _split_photo(path: str, cell: str, is_valid: bool, task: str) -> Photo:
    if task != "multi":
        return Photo(Path(path), cell, is_valid)
    labels = json.loads(cell)
    if not isinstance(labels, list) or not all(isinstance(c, str) for c in labels):
        raise ValueError(f"a label cell is not a list of labels: {_one_line(cell)}")
    return multi_label_photo(Path(path), tuple(labels), is_valid)


def parse_split(run_dir: Path, class_ids: list[str], recorded: object,
                task: str = "single") -> PhotoSet:
    """The photos a run was trained on, as its RUN/split.csv lists them (`class_ids` in the
    model's order, `task` the model's): a resumed run needs exactly these, not a new look
    at DATA.

    The file must be the one `train` wrote: its SHA-256 is checked against `recorded`, what
    RUN/config.json records (`RunFolder.split` reads it), and an edited split is an error
    (a run's photos and labels are those it was trained on). A run trained before
    config.json recorded it (`recorded` None) is read unchecked, with a note.
    """
    split = Path(run_dir) / SPLIT_FILE
    config = Path(run_dir) / "config.json"
    known = set(class_ids)
    if recorded is not None and not (isinstance(recorded, str)
                                     and re.fullmatch(r"[0-9a-f]{64}", recorded)):
        raise RunError(f"{config} records no valid checksum of {SPLIT_FILE} "
                       f"({SPLIT_CHECKSUM}: {_one_line(repr(recorded))}). Restore config.json, "
                       "or train the run again.")
    try:
        data = split.read_bytes()
    except OSError as e:
        raise DataError(f"{split} cannot be read ({e.strerror or e}); it must be as "
                        "`clearclass train` wrote it. Restore it, or train again.") from None
    notes = []
    if recorded is None:
        notes.append(f"{split} was written before clearclass recorded its checksum, so a "
                     "change to it cannot be detected.")
    elif hashlib.sha256(data).hexdigest() != recorded:
        raise RunError.edited(split, config, run_dir)
    try:
        with io.StringIO(data.decode("utf-8"), newline="") as f:
            photos = [_split_photo(read_cell(r["path"]), read_cell(r["label"]),
                                   parse_is_valid(r["is_valid"], f"{split}, line {line}"), task)
                      for line, r in enumerate(csv.DictReader(f), start=2)]
        unknown = sorted({c for p in photos for c in p.label_set} - known)
        if unknown or not photos:
            raise ValueError(f"classes not in the model: {', '.join(unknown[:3])}" if unknown
                             else "no photos")
    except (OSError, KeyError, TypeError, ValueError, UnicodeDecodeError, csv.Error,
            DataError) as e:
        raise DataError(f"{split} cannot be read ({type(e).__name__}: {e}); it must be as "
                        "`clearclass train` wrote it. Restore it, or train again.") from None
    return PhotoSet(photos, list(class_ids), "the run's split.csv", Path(run_dir), notes,
                    split_given=True, task=task)
