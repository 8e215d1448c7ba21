"""Where labelled photos come from: a folder per class, train/valid folders, or a CSV.

`find_photos(DATA)` recognises the layout and returns every photo with its class id and
whether it belongs to the validation set. Class ids are folder names (or CSV labels), kept
as they are; `display_name` makes them readable (`n02085620-Chihuahua` shows as
`Chihuahua`).
"""

from __future__ import annotations

import csv
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from clearclass.errors import DataError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".jfif"}
)
VALID_FOLDER_NAMES = ("valid", "val", "validation", "test")
# Stanford Dogs and ImageNet prefix each class folder with a WordNet id.
_WORDNET_PREFIX = re.compile(r"^n\d{8}[-_ ]+")
_TRUE_WORDS = frozenset({"1", "true", "yes", "y", "t", "valid", "validation"})
_FALSE_WORDS = frozenset({"0", "false", "no", "n", "f", "", "train"})


@dataclass(frozen=True)
class Photo:
    """One labelled photo: its file, its class id, and whether it is held out."""

    path: Path
    label: str
    is_valid: bool


@dataclass
class PhotoSet:
    """Every labelled photo of a dataset, with its train/validation split."""

    photos: list[Photo]
    class_ids: list[str]
    layout: str
    root: Path
    notes: list[str] = field(default_factory=list)

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
        """Photos per class id, as (train, valid)."""
        train = Counter(p.label for p in self.photos if not p.is_valid)
        valid = Counter(p.label for p in self.photos if p.is_valid)
        return {c: (train[c], valid[c]) for c in self.class_ids}

    def without(self, unreadable: set[Path]) -> PhotoSet:
        """The same set minus the photos that could not be decoded.

        A class left with no photo at all is an error that names its folder: training on a
        class that cannot be seen would only produce a wrong head.
        """
        kept = [p for p in self.photos if p.path not in unreadable]
        present = {p.label for p in kept}
        for class_id in self.class_ids:
            if class_id not in present:
                folder = _class_folder(self, class_id)
                raise DataError(
                    f"Class '{class_id}' has no readable image: every file in {folder} failed "
                    "to decode (see skipped.csv). Replace the files or remove the folder."
                )
        return PhotoSet(kept, self.class_ids, self.layout, self.root, list(self.notes))


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


def find_photos(data: str | Path, validation_fraction: float = 0.2, seed: int = 42) -> PhotoSet:
    """Find the labelled photos under DATA and split them into train and validation.

    DATA is one of:
    - a folder of class folders, `DATA/<class>/<photo>` (split by `validation_fraction`,
      stratified);
    - a folder holding `train/<class>/` and one of `valid/`, `val/`, `validation/`, `test/`
      (used as given);
    - a CSV file `path,label[,is_valid]`, paths relative to the CSV's folder.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise DataError("validation_fraction must be between 0 and 1 (exclusive); got "
                        f"{validation_fraction}.")
    root = Path(data).expanduser()
    if not root.exists():
        raise DataError(f"{root} does not exist. Pass a folder of class folders or a CSV file.")
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DataError(
                f"{root} is a file but not a CSV. Pass a folder of class folders "
                "(DATA/<class>/<photo>.jpg) or a CSV with columns path,label[,is_valid]."
            )
        photo_set = _from_csv(root, validation_fraction, seed)
    else:
        photo_set = _from_folders(root, validation_fraction, seed)
    _check_classes(photo_set)
    return photo_set


def _from_folders(root: Path, validation_fraction: float, seed: int) -> PhotoSet:
    subfolders = _subfolders(root)
    names = {d.name.lower(): d for d in subfolders}
    train_dir = names.get("train")
    valid_dir = next((names[n] for n in VALID_FOLDER_NAMES if n in names), None)
    if train_dir is not None and valid_dir is not None:
        train = _photos_in_class_folders(train_dir, is_valid=False)
        valid = _photos_in_class_folders(valid_dir, is_valid=True)
        class_ids = sorted({p.label for p in train})
        unknown = sorted({p.label for p in valid} - set(class_ids))
        notes = []
        if unknown:
            # A validation class the model never trains on can only be scored as wrong.
            valid = [p for p in valid if p.label not in unknown]
            notes.append(
                f"Ignored {len(unknown)} class folder(s) in {valid_dir.name}/ with no "
                f"counterpart in train/: {', '.join(unknown[:5])}"
            )
        layout = f"split folders ({train_dir.name}/ and {valid_dir.name}/)"
        return PhotoSet(train + valid, class_ids, layout, root, notes)

    notes = []
    # Stanford Dogs (and its Kaggle copy) keep the class folders one level down, in Images/.
    if not _has_images_below(subfolders):
        nested = next((d for d in subfolders if d.name.lower() == "images"), None)
        if nested is not None and _subfolders(nested):
            notes.append(f"Using the class folders in {nested} (Stanford Dogs layout).")
            root_for_classes = nested
        else:
            root_for_classes = root
    else:
        root_for_classes = root
    photos = _photos_in_class_folders(root_for_classes, is_valid=False)
    photos = _stratified_split(photos, validation_fraction, seed, notes)
    class_ids = sorted({p.label for p in photos})
    return PhotoSet(photos, class_ids, "class folders", root_for_classes, notes)


def _photos_in_class_folders(folder: Path, is_valid: bool) -> list[Photo]:
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
    photos = []
    for class_dir in class_dirs:
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and is_image_file(p))
        if not files:
            raise DataError(
                f"Class folder {class_dir} holds no images (looked for "
                f"{', '.join(sorted(IMAGE_EXTENSIONS))}). Add photos to it or remove it."
            )
        photos.extend(Photo(f, class_dir.name, is_valid) for f in files)
    return photos


def _from_csv(csv_path: Path, validation_fraction: float, seed: int) -> PhotoSet:
    base = csv_path.parent
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip().lower() for c in (reader.fieldnames or [])]
        if "path" not in columns or "label" not in columns:
            raise DataError(
                f"{csv_path} must have a header with columns path,label[,is_valid]; "
                f"found {', '.join(columns) or 'no header'}."
            )
        reader.fieldnames = columns
        has_split = "is_valid" in columns
        photos, missing = [], []
        for line, row in enumerate(reader, start=2):
            rel, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
            if not rel or not label:
                raise DataError(f"{csv_path}, line {line}: empty path or label.")
            path = (base / rel).resolve() if not Path(rel).is_absolute() else Path(rel)
            if not path.is_file():
                missing.append(rel)
                continue
            is_valid = (parse_is_valid(row.get("is_valid", ""), f"{csv_path}, line {line}")
                        if has_split else False)
            photos.append(Photo(path, label, is_valid))
    if missing:
        raise DataError(
            f"{len(missing)} file(s) listed in {csv_path} do not exist (paths are relative to "
            f"{base}), e.g. {missing[0]}."
        )
    if not photos:
        raise DataError(f"{csv_path} lists no photos.")
    notes = []
    if has_split:
        train_classes = {p.label for p in photos if not p.is_valid}
        unknown = sorted({p.label for p in photos if p.is_valid} - train_classes)
        if unknown:
            photos = [p for p in photos if p.label not in unknown]
            notes.append(f"Ignored validation-only label(s): {', '.join(unknown[:5])}")
        layout = "CSV with is_valid column"
    else:
        photos = _stratified_split(photos, validation_fraction, seed, notes)
        layout = "CSV"
    class_ids = sorted({p.label for p in photos})
    return PhotoSet(photos, class_ids, layout, base, notes)


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
    """Hold out `validation_fraction` of each class, so that every class is scored on validation."""
    by_class: dict[str, list[Photo]] = defaultdict(list)
    for p in photos:
        by_class[p.label].append(p)
    rng = random.Random(seed)
    result = []
    for label in sorted(by_class):
        members = sorted(by_class[label], key=lambda p: str(p.path))
        rng.shuffle(members)
        n_valid = round(len(members) * validation_fraction)
        if len(members) >= 2:
            n_valid = min(max(n_valid, 1), len(members) - 1)
        else:
            n_valid = 0
            notes.append(f"Class '{label}' has only one photo: it is used for training only.")
        result.extend(Photo(p.path, p.label, i < n_valid) for i, p in enumerate(members))
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
    trained = {p.label for p in photo_set.photos if not p.is_valid}
    untrained = [c for c in photo_set.class_ids if c not in trained]
    if untrained:
        raise DataError(
            f"Class '{untrained[0]}' has no training photos in {photo_set.root}, only "
            "validation ones. Add training photos for it."
        )


def _class_folder(photo_set: PhotoSet, class_id: str) -> Path:
    for p in photo_set.photos:
        if p.label == class_id:
            return p.path.parent
    return photo_set.root / class_id


def _subfolders(folder: Path) -> list[Path]:
    return sorted(
        d for d in folder.iterdir() if d.is_dir() and not d.name.startswith((".", "__"))
    )


def _has_images_below(folders: list[Path]) -> bool:
    return any(is_image_file(p) for d in folders for p in d.iterdir() if p.is_file())
