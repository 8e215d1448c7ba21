"""`clearclass verify`: find the files in a dataset folder that would hurt training.

fastai's `verify_images`, but saying what it found. Every image file under DIR (the
extensions training reads) is decoded as training would (`checks.examine`) and reported
when it is:
- unreadable or truncated;
- named for another format (PNG content in a .jpg): harmless to training, which reads the
  content, but confusing to other tools; `fix_extensions` renames it;
- smaller than `min_side` on its short side;
- an identical or near copy of an earlier file (in path order) in the same folder, in
  another class, or in another split of the same class (a photo in both train/ and valid/
  makes validation accuracy look better than it is);
- a link to a file listed already (the same file twice), or a linked folder that leads back
  to DIR or above it, or to another folder of DIR: training would find its photos twice,
  under two labels. Linked folders that lead elsewhere are checked like any other.
`delete` removes the unusable files and the extra copies (a linked copy: the link, never
the file it leads to), `move_to` moves them out keeping their class folder; DIR/manifest.csv,
when `search` wrote one, is updated to match. Linked folders are left for you to remove.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from clearclass.acquire.manifest import MANIFEST, read_manifest, write_manifest
from clearclass.data.checks import (
    MIN_SIDE,
    NEAR_DUPLICATE_BITS,
    DuplicateIndex,
    Examined,
    canonical_extension,
    examine_file,
    extension_fits,
)
from clearclass.data.sources import LINK_AGAIN, LINK_BACK, FolderLink, Found, scan_images
from clearclass.errors import AcquireError
from clearclass.fileio import free_path, shown_name
from clearclass.parallel import default_workers, map_in_order
from clearclass.progress import bar, say, show

UNREADABLE, TRUNCATED, TOO_SMALL = "unreadable", "truncated", "too small"
WRONG_EXTENSION = "wrong extension"
DUPLICATE, NEAR_DUPLICATE = "duplicate", "near duplicate"
ACROSS_CLASSES, ACROSS_SPLITS = "duplicate across classes", "duplicate across splits"
LINKED_FOLDER = "linked folder"
TABLE_ROWS = 50  # problems listed in the table; the report holds them all


@dataclass(frozen=True)
class Problem:
    """A file that would hurt training, and why; `other` is the file it duplicates,
    `extension` the one its content calls for."""

    path: Path
    kind: str
    detail: str
    other: Path | None = None
    extension: str = ""

    @property
    def removable(self) -> bool:
        """Whether delete/move_to takes it away (a wrong extension is renamed instead, a
        linked folder left for the user to remove)."""
        return self.kind not in (WRONG_EXTENSION, LINKED_FOLDER)


@dataclass
class VerifyReport:
    """What `verify` found in `root` and what it did about it."""

    root: Path
    checked: int
    problems: list[Problem] = field(default_factory=list)
    actions: dict[Path, str] = field(default_factory=dict)  # file -> what was done to it

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> Counter:
        return Counter(p.kind for p in self.problems)

    def to_table(self, limit: int = TABLE_ROWS) -> Table:
        summary = ", ".join(f"{n} {kind}" for kind, n in self.counts().most_common())
        table = Table(title=shown_name(f"{self.root}: {self.checked} photos checked; {summary}"))
        columns = ("file", "problem", "detail") + (("done",) if self.actions else ())
        for column in columns:
            table.add_column(column, overflow="fold")
        for p in self.problems[:limit]:
            row = (p.path.relative_to(self.root).as_posix(), p.kind, p.detail,
                   *((self.actions.get(p.path, ""),) if self.actions else ()))
            table.add_row(*map(shown_name, row))  # rich counts \xe9 as 4 characters
        if len(self.problems) > limit:
            table.add_row(f"... and {len(self.problems) - limit} more", *[""] * (len(columns) - 1))
        return table


def verify(
    folder: str | Path,
    delete: bool = False,
    move_to: str | Path | None = None,
    fix_extensions: bool = False,
    min_side: int = MIN_SIDE,
    near_bits: int = NEAR_DUPLICATE_BITS,
    workers: int | None = None,
) -> VerifyReport:
    """Check every photo under `folder`; optionally delete or move the bad ones.

    With `move_to="rejected/"`, an unreadable photos/beagle/x.jpg is moved to
    rejected/beagle/x.jpg. Prints the problems as a table (silenced as
    `clearclass.progress` says).

    Example:
        report = verify("photos/")  # only checks: nothing is deleted or moved
        print(report.checked, "photos checked,", len(report.problems), "problems")
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise AcquireError(f"{root} is not a folder. Give the dataset folder, e.g. "
                           "photos/ holding photos/<class>/<photo>.jpg.")
    if delete and move_to is not None:
        raise AcquireError("Give either --delete or --move-to, not both.")
    target = Path(move_to).expanduser() if move_to is not None else None
    if target is not None and target.resolve().is_relative_to(root.resolve()):
        raise AcquireError(f"--move-to {target} is inside {root}: the moved files would be "
                           "checked (and trained on) again. Choose a folder outside it.")
    try:
        found, links = scan_images(root, follow_inside=False)
    except OSError as e:
        raise AcquireError(f"Cannot read {e.filename or root}: {e.strerror or e}. Check that "
                           "you may read every folder in it.") from None
    if not found and not links:
        raise AcquireError(f"No photos found under {root} (looked for .jpg, .png, .webp, ...).")
    files, linked = _each_file_once(root, found)

    report = VerifyReport(root, len(files), [_linked_folder(root, link) for link in links]
                          + linked)
    index = DuplicateIndex(near_bits)
    workers = workers or default_workers()
    with bar("verifying photos", len(files)) as progress:
        for path, outcome in map_in_order(examine_file, files, workers):
            progress.advance()
            report.problems.extend(_judge(root, path, outcome, index, min_side))

    if delete or target is not None or fix_extensions:
        _act(report, delete, target, fix_extensions)
    _print(report, delete or target is not None, fix_extensions)
    return report


def _linked_folder(root: Path, link: FolderLink) -> Problem:
    target = _shown_in(root, link.target)
    if link.why == LINK_BACK:
        where = ("back to this folder itself" if link.target == root.resolve() else
                 f"to {target}, which holds this folder")
        detail = f"a link {where}: training would count every photo again, under another label"
    elif link.why == LINK_AGAIN:
        first = link.scanned_as.relative_to(root).as_posix() if link.scanned_as else target
        detail = (f"a link to {target}, checked already as {first}/: its photos would be "
                  "counted twice")
    else:
        detail = f"a link to {target}, also in this folder: its photos would be counted twice"
    return Problem(link.path, LINKED_FOLDER, detail + "; remove the link")


def _each_file_once(root: Path, found: list[Found]) -> tuple[list[Path], list[Problem]]:
    """The files to examine, each real file once, and a problem for each other path to it.

    The path kept is one that is not itself a link, so that --delete and --move-to only ever
    take away links to it."""
    by_real: dict[Path, list[Path]] = {}
    for f in found:
        by_real.setdefault(f.real, []).append(f.path)
    kept, problems = {}, []
    for paths in by_real.values():
        keep = next((p for p in paths if not p.is_symlink()), paths[0])
        kept[keep] = True
        for path in paths:
            if path == keep:
                continue
            here, there = path.parent.relative_to(root), keep.parent.relative_to(root)
            kind = (DUPLICATE if here == there else
                    ACROSS_SPLITS if here.name == there.name else ACROSS_CLASSES)
            problems.append(Problem(path, kind, f"a link to {keep.relative_to(root).as_posix()}"
                                                " (the same file)", keep))
    return sorted(kept), sorted(problems, key=lambda p: p.path)


def _shown_in(root: Path, target: Path) -> str:
    real_root = root.resolve()
    if target.is_relative_to(real_root):
        return (target.relative_to(real_root).as_posix() or ".") + "/"
    return str(target)


def _judge(root: Path, path: Path, outcome: Examined | str, index: DuplicateIndex,
           min_side: int) -> list[Problem]:
    if isinstance(outcome, str):
        kind = TRUNCATED if "truncated" in outcome.lower() else UNREADABLE
        return [Problem(path, kind, outcome)]
    info = outcome
    problems = []
    if not extension_fits(path, info.format):
        problems.append(Problem(path, WRONG_EXTENSION, f"the content is {info.format}",
                                extension=canonical_extension(info.format) or path.suffix))
    if info.short_side < min_side:
        problems.append(Problem(path, TOO_SMALL, f"{info.width}x{info.height} px, under "
                                                 f"{min_side} px on the short side"))
        return problems
    match = index.find(info.sha256, info.phash)
    if match is None:
        index.add(info.sha256, info.phash, path)
        return problems
    other: Path = match.key
    here, there = path.parent.relative_to(root), other.parent.relative_to(root)
    original = other.relative_to(root).as_posix()
    copy = f"identical to {original}" if match.kind == "identical" else \
        f"a resized or re-encoded copy of {original} ({match.bits} of 64 hash bits differ)"
    if here == there:
        kind = DUPLICATE if match.kind == "identical" else NEAR_DUPLICATE
    elif here.name == there.name:
        kind = ACROSS_SPLITS
    else:
        kind = ACROSS_CLASSES
    problems.append(Problem(path, kind, copy, other))
    return problems


def _act(report: VerifyReport, delete: bool, target: Path | None, fix_extensions: bool) -> None:
    """Delete, move or rename as asked, then bring DIR/manifest.csv in line."""
    root = report.root
    entries = read_manifest(root) if (root / MANIFEST).is_file() else None
    moved: dict[str, str | None] = {}  # manifest path -> new path, None when gone
    removable = {p.path for p in report.problems if p.removable}
    for path in sorted(removable):
        rel = path.relative_to(root)
        if delete:
            path.unlink(missing_ok=True)
            report.actions[path] = "deleted"
        elif target is not None:
            dest = free_path(target / rel)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, dest)
            report.actions[path] = f"moved to {dest}"
        else:
            continue
        moved[rel.as_posix()] = None
    if fix_extensions:
        for p in report.problems:
            if p.kind != WRONG_EXTENSION or p.path in report.actions:
                continue
            dest = free_path(p.path.with_suffix(p.extension))
            p.path.rename(dest)
            report.actions[p.path] = f"renamed to {dest.name}"
            moved[p.path.relative_to(root).as_posix()] = dest.relative_to(root).as_posix()
    if entries is not None and moved:
        kept = []
        for entry in entries:
            if entry.file in moved:
                if moved[entry.file] is None:
                    continue
                entry.file = moved[entry.file]
            kept.append(entry)
        write_manifest(root, kept)


def _print(report: VerifyReport, removing: bool, fix_extensions: bool) -> None:
    if report.ok:
        say(f"{report.checked} photos checked in {report.root}: no problems found.")
        return
    show(report.to_table())
    removable = sum(1 for p in report.problems if p.removable)
    renamable = sum(1 for p in report.problems if p.kind == WRONG_EXTENSION)
    if removable and not removing:
        say(f"{removable} file(s) would be taken away by --delete, or by --move-to DIR "
            "(which keeps their class folders); for duplicates, the first copy in path order "
            "is kept.")
    if renamable and not fix_extensions:
        say(f"{renamable} file(s) have an extension that does not match their content; "
            "training reads them anyway, --fix-extensions renames them.")
    if ACROSS_CLASSES in report.counts():
        say("A photo in two classes gives the model two answers for it: decide which class "
            "it belongs to.")
    if LINKED_FOLDER in report.counts():
        say("A linked folder listed above would give training the same photos twice: remove "
            "the link with `unlink LINK`, which never touches the photos it leads to.")
