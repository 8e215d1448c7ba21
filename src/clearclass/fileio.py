"""Writing files and folders so that a crash never leaves half of one.

A file is written to a temp file beside it, then renamed over it (`atomic_write`). A folder
that must change as a unit (a run, a model bundle, a report) is written as a new copy
beside it and swapped in (`FolderChange`): whatever moment the process dies, a reader
(`settled`) finds the previous complete state or the next one, never a mix.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import errno
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once, at import, before any thread.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates files readable by their owner only; a finished file gets the mode any
# other new file would have (a web server or a colleague may need to read a model).
FILE_MODE = 0o666 & ~_read_umask()


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` to fill a temp file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    """`text` as UTF-8; a name that is not UTF-8 in it is written with `\\udcXX` escapes
    (see `json_text`), so that no caller's file name can make the write fail."""
    return atomic_write(path, lambda tmp: tmp.write_text(_escape_surrogates(text),
                                                         encoding="utf-8"))


def write_bytes(path: Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_json(path: Path, data: Any) -> Path:
    return write_text(path, json_text(data, indent=2) + "\n")


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """A CSV file whose text cells go through `csv_cell`: names that are not UTF-8 escaped,
    formula-looking ones quoted; `read_cell` gives back what was written."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([csv_cell(cell) for cell in row] for row in rows)
    return write_text(path, buffer.getvalue())


# --- names as the file system gives them ------------------------------------------------------
# On POSIX a file name is bytes, and Python decodes the bytes that are not UTF-8 with
# surrogateescape: the file b"caf\xe9.jpg" is the str 'caf\udce9.jpg', which no UTF-8 text
# can hold (Windows' names can hold lone surrogates too). What clearclass writes keeps such
# a name, readable and valid UTF-8:
# - CSV cells (`csv_cell`, `escape_name`): each such byte as the four characters \xe9 (another
#   lone surrogate as \udXXX); a backslash that would read as such an escape is written
#   \x5c, so that `unescape_name` gives back exactly the name written, for every name.
# - JSON (`json_text`): the JSON escape \udce9, which json.loads reads back as the same str,
#   so `os.fsencode` gives the original bytes.
# - pages and messages (`shown_name`): \xe9, as in the CSV files.
_NAME_ESCAPE = re.compile(r"\\(?:x(?:5c|[89a-f][0-9a-f])|ud[89a-f][0-9a-f]{2})", re.IGNORECASE)
_TO_ESCAPE = re.compile(r"[\ud800-\udfff]|\\(?=x(?:5c|[89a-f][0-9a-f])|ud[89a-f][0-9a-f]{2})",
                        re.IGNORECASE)
_SURROGATE = re.compile("[\ud800-\udfff]")


def _escaped(character: str) -> str:
    code = ord(character)
    if character == "\\":
        return "\\x5c"
    return f"\\x{code - 0xdc00:02x}" if 0xdc80 <= code <= 0xdcff else f"\\u{code:04x}"


def shown_name(text: str) -> str:
    """`text` (a file or folder name, a path, a message naming one) as people read it: each
    byte that is not UTF-8 as \\xe9.

    Example:
        print(shown_name(os.fsdecode(b"caf\\xe9.jpg")))  # caf\\xe9.jpg
    """
    return _SURROGATE.sub(lambda m: _escaped(m.group()), text)


def escape_name(text: str) -> str:
    """`text` with each byte that is not UTF-8 as \\xe9, reversibly: `unescape_name` gives
    back `text` exactly (a backslash that would read as an escape is written \\x5c)."""
    return _TO_ESCAPE.sub(lambda m: _escaped(m.group()), text)


def unescape_name(text: str) -> str:
    """The name `escape_name` wrote as `text`."""
    def one(m: re.Match) -> str:
        code = int(m.group()[2:], 16)
        if m.group()[1] in "uU":
            return chr(code)
        return "\\" if code == 0x5C else chr(0xDC00 + code)

    return _NAME_ESCAPE.sub(one, text)


def _escape_surrogates(text: str) -> str:
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def json_text(data: Any, indent: int | None = 2, **options: Any) -> str:
    """`data` as JSON (UTF-8 text as is): a lone surrogate (a name that is not UTF-8) as the
    JSON escape \\udce9, so the text is valid UTF-8 and `json.loads` gives back the same str.
    """
    # A lone surrogate can only be inside a JSON string, where its escape means the same.
    return _escape_surrogates(json.dumps(data, indent=indent, ensure_ascii=False, **options))


# Spreadsheets run a cell that starts with one of these as a formula (OWASP's "CSV
# injection"): such a text cell is written with a ' before it, and `read_cell` takes it off.
# A cell that starts with ' then one of these gets one more ', so that the quote is taken
# off only where it was put. Numbers (-0.5, -1e-05) are left as they are.
_STARTS = frozenset("'=+-@\t\r")
_FORMULA = re.compile(r"'*[=+\-@\t\r]")
_QUOTED_FORMULA = re.compile(r"'+[=+\-@\t\r]")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf|nan)")


def csv_cell(value: Any) -> Any:
    """A cell as `write_csv` writes it: text names escaped (`escape_name`), a text that a
    spreadsheet would run as a formula quoted with a leading '; numbers as they are."""
    if not isinstance(value, str):
        if not isinstance(value, os.PathLike):
            return value
        value = os.fspath(value)
    if not value.isascii() or "\\" in value:  # (a split.csv of 100,000 photos: 0.1 s)
        value = escape_name(value)
    if value[:1] in _STARTS and _FORMULA.match(value) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def read_cell(text: str) -> str:
    """The text `csv_cell` was given, from the cell it wrote (a cell written otherwise,
    by hand or by another program, comes back as it is unless it looks like one)."""
    if _QUOTED_FORMULA.match(text):
        text = text[1:]
    return unescape_name(text)


def _shown_on_error(error: UnicodeError) -> tuple[str, int]:
    """The codec error handler "clearclass.shown": what a stream cannot encode (a name that
    is not UTF-8, or any non-ASCII text on an ASCII terminal) as \\xe9-style escapes."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    bad = error.object[error.start:error.end]
    return "".join(_escaped(c) if 0xD800 <= ord(c) <= 0xDFFF else
                   c.encode("ascii", "backslashreplace").decode("ascii")
                   for c in bad), error.end


codecs.register_error("clearclass.shown", _shown_on_error)


def printable_streams() -> None:
    """Make sys.stdout and sys.stderr print what they cannot encode as escapes (names that
    are not UTF-8, or accents on an ASCII terminal) instead of raising."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.reconfigure(errors="clearclass.shown")


def output_folder(path: str | Path, setting: str = "out") -> Path:
    """The folder a user named for results, created if missing; a clear error if it cannot be
    (a file of that name, a file where a parent folder should be, no permission)."""
    from clearclass.errors import SettingError

    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise SettingError(setting, f"names a file, {folder}; give a folder (it is created "
                                    "when missing).")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SettingError(setting, f"{folder} cannot be created ({e.strerror}); give another "
                                    "folder.") from None
    return folder


def free_path(path: Path) -> Path:
    """`path`, or the same name with -2, -3, ... before the extension when it is taken."""
    candidate, n = path, 2
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    return candidate


# A folder's next state is written into `.NAME.building`; once complete it is renamed
# `.NAME.next` (one rename: from then on it is known to be whole), NAME is renamed
# `.NAME.previous`, `.NAME.next` becomes NAME, and `.NAME.previous` is deleted. POSIX has
# no portable atomic exchange of two folders, so for an instant NAME is missing: `settled`
# then reads `.NAME.next` (or `.NAME.previous`), and the next writer finishes the swap.
def _sibling(folder: Path, state: str) -> Path:
    return folder.with_name(f".{folder.name}.{state}")


def _link_or_copy(source: str, target: str) -> None:
    # Unchanged files are shared with the previous state: every write here replaces a file
    # by renaming a new one over it, so a shared file is never modified in place.
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links
        shutil.copy2(source, target)


def _sync_folder(folder: Path) -> None:
    """Make renames inside `folder` durable (a power cut after a swap keeps it)."""
    with contextlib.suppress(OSError):  # Windows cannot open a folder; NTFS logs renames
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _work_in_progress(folder: str, names: list[str]) -> set[str]:
    """What a copy of a folder leaves out: other writers' temp files and staging folders."""
    return {n for n in names if n.startswith(".") and n.endswith(
        (".tmp", ".building", ".next", ".previous", ".lock"))}


@contextlib.contextmanager
def exclusive(folder: str | Path, what: str = "--out") -> Iterator[None]:
    """Only one process at a time may write `folder`; a second one gets a clear error at once.

    The lock is the operating system's (flock on Unix, LockFileEx on Windows, through the
    filelock package) on `.NAME.lock` beside the folder, so a killed process never leaves
    it held.
    """
    from filelock import FileLock, Timeout

    from clearclass.errors import RunError

    folder = Path(folder)
    path = folder.with_name(f".{folder.name}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, timeout=0)  # not waiting: a second writer is told at once
    try:
        lock.acquire()
    except Timeout:
        raise RunError(f"Another clearclass process is writing {folder}; wait for it to "
                       f"finish, or choose another {what}.") from None
    try:
        yield
    finally:
        # The lock file goes once the work is done, so that only runs stay beside runs, and
        # `run_dir_for` takes a lock file for a run being started. It is removed while still
        # locked: removed after the release, it could be the file a next writer has just
        # locked. Removing a lock file has its own race: a process that opened it just
        # before would lock the removed file once this one lets go, while a third creates a
        # new file and locks that. filelock refuses a lock on a file without a name
        # (st_nlink 0, since filelock 3.21, the floor in pyproject.toml), so that process is
        # told another one is writing, as it was a moment before. Windows cannot remove an
        # open file: there filelock removes it after the release, where it is free.
        with contextlib.suppress(OSError):
            path.unlink()
        lock.release()


def foreign_entries(folder: Path, expected: Iterable[str]) -> list[str]:
    """The names in `folder` that are not among `expected`, sorted (none if it is missing).

    A folder replaced whole (`changing(..., start_empty=True)`) must hold nothing else, or
    the user's files would go with it.
    """
    known = set(expected)
    return sorted(p.name for p in folder.iterdir() if p.name not in known) \
        if folder.is_dir() else []


def finish_interrupted_change(folder: Path) -> None:
    """Complete or undo a `FolderChange` of `folder` that a killed process left half-done."""
    folder = Path(folder)
    building, ready, previous = (_sibling(folder, s) for s in ("building", "next", "previous"))
    if ready.is_dir():
        if folder.exists():
            shutil.rmtree(previous, ignore_errors=True)
            folder.rename(previous)
        ready.rename(folder)
    elif not folder.exists() and previous.is_dir():
        previous.rename(folder)
    shutil.rmtree(previous, ignore_errors=True)
    shutil.rmtree(building, ignore_errors=True)


def settled(path: str | Path) -> Path:
    """`path`, or where its content is while a `FolderChange` of it (or of a folder above
    it) is half-done because a process died: the complete next state, else the previous."""
    path = Path(path)
    if path.exists():
        return path
    for folder in (path, *path.parents):
        if folder.exists() or folder.name in ("", ".", ".."):
            break
        for state in ("next", "previous"):
            candidate = _sibling(folder, state)
            if candidate.is_dir():
                return candidate / path.relative_to(folder)
    return path


class FolderChange:
    """The next state of folder `target`, written beside it, then swapped in whole.

    `path` is the folder to write into: a copy of `target` (unchanged files shared as hard
    links) or, with `start_empty`, an empty one. `commit()` swaps it in; `discard()` drops
    it. Readers see `target` as it was until `commit()` returns, then the new state.
    """

    def __init__(self, target: str | Path, start_empty: bool = False):
        self.target = Path(target)
        finish_interrupted_change(self.target)
        self.path = _sibling(self.target, "building")
        if self.target.is_dir() and not start_empty:
            shutil.copytree(self.target, self.path, symlinks=True, ignore=_work_in_progress,
                            copy_function=_link_or_copy)
        else:
            self.path.mkdir(parents=True)

    def commit(self) -> Path:
        ready, previous = _sibling(self.target, "next"), _sibling(self.target, "previous")
        _sync_folder(self.path)
        self.path.rename(ready)
        if self.target.exists():
            self.target.rename(previous)
        ready.rename(self.target)
        _sync_folder(self.target.parent)
        shutil.rmtree(previous, ignore_errors=True)
        return self.target

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


@contextlib.contextmanager
def changing(target: str | Path, start_empty: bool = False) -> Iterator[Path]:
    """`with changing(folder) as new:` write into `new`; on success it replaces `folder`
    whole, on an error (or Ctrl-C) `folder` is left as it was.

    Example:
        with changing(Path("runs/example/notes")) as notes:
            (notes / "todo.txt").write_text("look at the top losses")
    """
    change = FolderChange(target, start_empty=start_empty)
    try:
        yield change.path
    except BaseException:
        change.discard()
        raise
    change.commit()


# --- moving a file, across file systems too ---------------------------------------------------

def staged_path(target: str | Path) -> Path:
    """The hidden name beside `target` that `move_file` copies into before renaming it to
    `target`: at most a partial or complete copy of a file that still exists elsewhere."""
    target = Path(target)
    name = f".{target.name}.moving.tmp"
    if len(os.fsencode(name)) > 255:  # the longest name most file systems allow
        import hashlib

        name = f".{hashlib.sha256(os.fsencode(target.name)).hexdigest()[:32]}.moving.tmp"
    return target.with_name(name)


def move_file(source: str | Path, target: str | Path) -> Path:
    """Move a file (or a link) to `target`, which must not exist, so that a process stopped
    at any moment leaves `source` whole, `target` whole, or both, never half of one.

    On one file system this is one rename. Across two, the file is copied to
    `staged_path(target)` (mode and times kept, as `shutil.move` keeps them), flushed to
    disk, renamed to `target`, and only then is `source` deleted. A stop leaves a partial or
    complete copy at the staged name (with `source` untouched), or `source` and an identical
    `target`: whoever finishes or reverses the move compares them before deleting one.
    """
    source, target = Path(source), Path(target)
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, "A file is in the way of a move", str(target))
    try:
        os.rename(source, target)
        return target
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    staged = staged_path(target)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(staged)  # a partial copy left by an earlier move that was stopped
    if os.path.islink(source):
        os.symlink(os.readlink(source), staged)
    else:
        with open(source, "rb") as original, open(staged, "wb") as copy:
            shutil.copyfileobj(original, copy, 1 << 20)
            copy.flush()
            shutil.copystat(source, staged)
            os.fsync(copy.fileno())
    os.rename(staged, target)
    _sync_folder(target.parent)
    os.unlink(source)
    _sync_folder(source.parent)
    return target


def stray_temp_files(path: str | Path) -> list[Path]:
    """The temp files that `atomic_write(path)` (or `move_file` to `path`) left beside `path`
    when its process was killed before it could remove them."""
    import glob

    path = Path(path)
    pattern = f".{glob.escape(path.name)}.*.tmp"
    return sorted(path.parent.glob(pattern)) if path.parent.is_dir() else []
