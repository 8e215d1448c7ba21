"""DIR/manifest.csv: where each photo `clearclass search` saved came from, for attribution.

One row per photo: the file (relative to DIR), its class, the source URL, the provider, the
author and licence where the provider gives them, the photo's page, the provider's photo id,
its size, and the hashes duplicates are found with (sha256 of the bytes as downloaded, and
the 64-bit perceptual hash). Running `search` again into the same DIR appends rows; rows
whose file has gone (deleted by hand or by `verify --delete`) are dropped.
"""

from __future__ import annotations

import csv
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from clearclass import fileio
from clearclass.errors import AcquireError

MANIFEST = "manifest.csv"


@dataclass
class Entry:
    """One saved photo and its source."""

    file: str  # relative to DIR, with forward slashes: beagle/pexels-1234.jpg
    class_id: str  # the class (folder) it was saved under
    source_url: str
    provider: str
    author: str = ""
    licence: str = ""
    page_url: str = ""
    photo_id: str = ""
    width: int = 0
    height: int = 0
    sha256: str = ""
    phash: str = ""  # 16 hex digits; "" when unknown

    @property
    def label(self) -> str:
        """The class (folder) name; kept for code written before `class_id`."""
        return self.class_id

    @property
    def phash_int(self) -> int | None:
        try:
            return int(self.phash, 16) if self.phash else None
        except ValueError:
            return None


# The CSV calls the class id "class" (a Python keyword, so not the field's name).
COLUMNS = tuple("class" if f.name == "class_id" else f.name for f in fields(Entry))


def read_manifest(folder: Path) -> list[Entry]:
    """The entries of `folder/manifest.csv` whose file still exists; [] without a manifest.

    After `clearclass search`, `len(read_manifest(Path("photos")))` is the number of photos
    it saved.

    Example:
        print(read_manifest(Path("photos")))  # []: photos/ has no manifest.csv
    """
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not {"file", "class", "source_url"} <= set(reader.fieldnames or ()):
            raise AcquireError(
                f"{path} is not a clearclass manifest (its columns are "
                f"{', '.join(reader.fieldnames or ()) or 'none'}; expected {', '.join(COLUMNS)}). "
                "Move it away, or download into another folder with --out.")
        entries = []
        for written in reader:  # each cell as write_manifest gave it (fileio.csv_cell)
            row = {k: fileio.read_cell(v) for k, v in written.items() if isinstance(v, str)}
            entry = Entry(
                file=row.get("file") or "", class_id=row.get("class") or "",
                source_url=row.get("source_url") or "", provider=row.get("provider") or "",
                author=row.get("author") or "", licence=row.get("licence") or "",
                page_url=row.get("page_url") or "", photo_id=row.get("photo_id") or "",
                width=_int(row.get("width")), height=_int(row.get("height")),
                sha256=row.get("sha256") or "", phash=row.get("phash") or "")
            if entry.file and (Path(folder) / entry.file).is_file():
                entries.append(entry)
    return entries


def write_manifest(folder: Path, entries: list[Entry]) -> Path:
    """Write `folder/manifest.csv` (atomically: an interrupted write leaves the old one).

    `write_manifest(out, read_manifest(out))` drops the rows of deleted photos.

    Example:
        import tempfile
        out = Path(tempfile.mkdtemp())
        path = write_manifest(out, [Entry("beagle/1.jpg", "beagle", "https://x.org/1.jpg", "")])
        print(path.name, read_manifest(out))  # manifest.csv []: beagle/1.jpg is not in out/
    """
    return fileio.write_csv(Path(folder) / MANIFEST, COLUMNS, (astuple(e) for e in entries))


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0
