"""`clearclass runs`: one table of the training runs under a folder, newest first.

Named runs_table, not runs: a submodule `clearclass.runs` would, once imported, replace the
function `clearclass.runs` on the package.

Every value comes from the run folder's own readers (`RunFolder`: config.json, metrics.csv,
summary.json, model.json) and from the evaluation's (`read_results`: RUN/report/results.json
for the accuracy with test-time augmentation). A run that cannot be read whole is still a
row, with what could be read and why the rest could not; the table never fails because of
one run. Nothing is written, locked or finished here: a listing must not change a run
another process is training.
"""

from __future__ import annotations

import datetime
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearclass import fileio
from clearclass.data.sources import data_name
from clearclass.errors import ClearclassError, RunError, SettingError, check_path
from clearclass.run_folder import CHECKPOINT_DIR, CONFIG_FILE, EpochRow, RunFolder
from clearclass.tracking import LOCAL_ARTIFACTS

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from rich.table import Table

__all__ = ["RunRow", "Runs", "runs"]

HEADER = ("run", "data", "model", "size", "epochs", "photos", "classes", "accuracy", "TTA",
          "time", "device", "date", "differs")
CSV_HEADER = ("run", "data", "model", "size", "epochs_done", "epochs_planned", "state",
              "train_photos", "valid_photos", "classes", "accuracy", "tta_accuracy",
              "seconds", "device", "date", "differs", "problem")
# Settings already in a column of their own, or that change how a run runs but never what it
# computes (training/config.py's RESUME_SETTINGS), or name where it went: not "differences".
NOT_COMPARED = frozenset({"data", "model", "item_resize", "epochs", "freeze_epochs", "out",
                          "overwrite", "device", "workers", "cache", "cache_limit",
                          "checkpoint_minutes", "onnx"})
# Columns said once above the terminal's table when every run has the same value.
SAID_ONCE = ("data", "model", "size", "photos", "classes", "device")
DIFFERS_SHOWN = 4  # settings written in a row's "differs" cell; more are counted
# Folders a `fileio.FolderChange` or `fileio.exclusive` leaves beside a run: never a run.
STAGING_SUFFIXES = (".building", ".next", ".previous", ".lock", ".tmp")


@dataclass
class RunRow:
    """One run of the table: what its files say, None (or "") where they say nothing.

    Example:
        row = clearclass.runs("runs").rows[0]
        print(row.run, row.epochs, row.accuracy, row.seconds, row.differs)
    """

    run: str  # its folder, relative to the folder listed
    path: Path
    data: str = ""  # the name of the photos' folder (or CSV)
    model: str = ""
    size: int | None = None  # item_resize, pixels
    epochs_done: int = 0
    epochs_planned: int | None = None
    state: str = ""  # finished, stopped, training, or unreadable
    train_photos: int | None = None
    valid_photos: int | None = None
    classes: int | None = None
    accuracy: float | None = None  # the last epoch's validation accuracy
    tta_accuracy: float | None = None  # from `clearclass evaluate --tta`, when it was run
    seconds: float | None = None  # training time, all epochs
    device: str = ""
    date: datetime.datetime | None = None  # when its last epoch was saved
    settings: dict[str, Any] = field(default_factory=dict, repr=False)  # config.json's
    history: list[EpochRow] = field(default_factory=list, repr=False)
    differs: str = ""  # its values of the settings that vary between the runs listed
    problem: str = ""  # why some of it could not be read ("" when all could)

    @property
    def epochs(self) -> str:
        """"3 of 3", "2 of 3 (stopped)": epochs done of those planned, and the state when
        the run is not finished."""
        planned = f" of {self.epochs_planned}" if self.epochs_planned is not None else ""
        state = f" ({self.state})" if self.state not in ("finished", "") else ""
        return f"{self.epochs_done}{planned}{state}"

    def cells(self) -> tuple[str, ...]:
        """The row as the table shows it, in HEADER's order."""
        photos = (f"{_text(self.train_photos)}/{_text(self.valid_photos)}"
                  if self.train_photos is not None or self.valid_photos is not None else "")
        differs = self.differs if not self.problem else \
            "; ".join(filter(None, (f"unreadable: {self.problem}", self.differs)))
        return (self.run, self.data, self.model, _text(self.size), self.epochs, photos,
                _text(self.classes), _percent(self.accuracy), _percent(self.tta_accuracy),
                _duration(self.seconds), self.device,
                self.date.strftime("%Y-%m-%d %H:%M") if self.date else "", differs)

    def csv_cells(self) -> tuple:
        """The row as to_csv writes it: numbers as numbers, "" where unknown."""
        return (self.run, self.data, self.model, _blank(self.size), self.epochs_done,
                _blank(self.epochs_planned), self.state, _blank(self.train_photos),
                _blank(self.valid_photos), _blank(self.classes), _blank(self.accuracy),
                _blank(self.tta_accuracy), _blank(self.seconds), self.device,
                self.date.isoformat(timespec="seconds") if self.date else "", self.differs,
                self.problem)


@dataclass
class Runs:
    """The runs under a folder, newest first (what `clearclass.runs` returns).

    `rows` are `RunRow`s; `varying`, the settings whose values differ between them (their
    values are each row's `differs`); `notes`, a line about the runs that could not be read
    whole. Shows itself as a table in a notebook; `plot()` draws their validation curves.

    Example:
        found = clearclass.runs("runs")
        print(found)                                   # the table, as text
        print(found.rows[0].model, found.rows[0].accuracy)
        found.to_csv("runs.csv")
    """

    folder: Path
    rows: list[RunRow]
    varying: list[str] = field(default_factory=list)

    @property
    def notes(self) -> list[str]:
        """One line naming the runs that could not be read whole, and why; [] otherwise."""
        damaged = [r for r in self.rows if r.problem]
        if not damaged:
            return []
        listed = "; ".join(f"{r.run} ({r.problem})" for r in damaged[:3])
        more = f" and {len(damaged) - 3} more" if len(damaged) > 3 else ""
        return [f"{len(damaged)} of {len(self.rows)} runs could not be read whole, shown with "
                f"what could: {listed}{more}."]

    @property
    def table(self) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
        """(header, rows) as text, as the table shows them: no pandas needed."""
        return HEADER, [r.cells() for r in self.rows]

    def to_csv(self, path: str | Path) -> Path:
        """Write the rows to a CSV file (numbers unformatted; accuracy as a fraction; time
        in seconds; date in ISO 8601) and return its path."""
        check_path("path", path, "a CSV file to write")
        return fileio.write_csv(Path(path).expanduser(), CSV_HEADER,
                                [r.csv_cells() for r in self.rows])

    def plot(self, limit: int | None = None) -> Figure:
        """Each run's validation accuracy and loss per epoch on one figure (a matplotlib
        Figure), legend by run; the `limit` newest runs (default 12, beyond which lines
        and legend blur), and the title says how many there were."""
        from clearclass import figures

        limit = figures.RUN_CURVES if limit is None else limit
        drawn = [(r.run, r.history) for r in self.rows if r.history][:limit]
        total = sum(1 for r in self.rows if r.history)
        return figures.run_curves(drawn, total=total)

    def to_table(self) -> Table:
        """The runs as a rich table (what the command prints in a terminal). A column whose
        value is the same for every run (the photos' folder, the model, the device...) is
        said once in the title, and an empty one (TTA before any `evaluate --tta`) left
        out, so that the columns that tell runs apart keep their room at 80 characters;
        names are never read as markup."""
        from rich import box
        from rich.table import Table
        from rich.text import Text

        header, rows = self.table
        common = {c: rows[0][header.index(c)] for c in SAID_ONCE
                  if len({r[header.index(c)] for r in rows}) == 1}
        said = ", ".join(f"{c} {v}" for c, v in common.items() if v)
        table = Table(title=Text(fileio.shown_name(
            f"Runs in {self.folder}, newest first" + (f"; all: {said}" if said else ""))),
            box=box.SIMPLE_HEAD, pad_edge=False)
        kept = [i for i, c in enumerate(header)
                if c not in common and (c == "run" or any(r[i] for r in rows))]
        # Short values never wrap; a name, the device and the settings wrap where needed.
        widths = {"run": 12, "data": 8, "model": 10, "device": 10, "differs": 14}
        for i in kept:
            name = header[i]
            table.add_column(name, justify="left" if name in widths or name == "date"
                             else "right", overflow="fold", no_wrap=name not in widths,
                             min_width=widths.get(name))
        for row in rows:
            table.add_row(*(Text(fileio.shown_name(row[i])) for i in kept))
        return table

    def text(self) -> str:
        """The table as aligned plain text, every column (what the command prints into a
        pipe or a file)."""
        header, rows = self.table
        shown = [tuple(fileio.shown_name(c) for c in r) for r in (header, *rows)]
        widths = [max(len(r[i]) for r in shown) for i in range(len(header))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                         for r in shown)

    def __repr__(self) -> str:
        return "\n".join([self.text(), *self.notes])

    def _repr_html_(self) -> str:
        from clearclass import pages

        header, rows = self.table
        return pages.render("runs_table.html", folder=str(self.folder), header=header,
                            rows=rows, notes=self.notes, varying=self.varying)


def runs(folder: str | Path = "runs") -> Runs:
    """The training runs under `folder` (searched at any depth; `folder` may be a run
    itself), newest first: model, size, epochs, photos, classes, accuracy, accuracy with
    test-time augmentation (after `clearclass evaluate --tta`), time, device, date, and the
    settings that differ between them.

    A run that is stopped or still training is listed with the epochs it has done; one whose
    files are damaged is listed with what can be read and why the rest cannot (`notes`).
    A folder that does not exist or holds no run is a RunError that says what to give.

    Example:
        found = clearclass.runs("runs")
        found.plot()        # the validation curves of every run, in one figure
    """
    check_path("folder", folder, "a folder of runs")
    root = Path(folder).expanduser()
    if not root.is_dir() and not fileio.settled(root).is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise RunError(f"{root} {what}; give the folder that holds your runs (clearclass "
                       f"train DATA --out {_example(root)}/NAME puts one there).")
    rows = [_read_row(path, root) for path in _run_folders(root)]
    if not rows:
        raise RunError(f"{root} holds no run folder; train one with clearclass train DATA "
                       f"--out {_example(root)}/NAME.")
    oldest = datetime.datetime.min
    rows.sort(key=lambda r: r.run)
    rows.sort(key=lambda r: r.date or oldest, reverse=True)  # stable: names break ties
    varying = _mark_differences(rows)
    return Runs(root, rows, varying)


def _example(root: Path) -> str:
    return fileio.shown_name(str(root)).rstrip("/") or "runs"


# --- finding the runs ----------------------------------------------------------------------

# MLflow's artifact folders beside the runs (`train --track mlflow`) hold copies of runs'
# files, config.json included; they are not runs.
TRACKER_STORES = (LOCAL_ARTIFACTS, "mlruns")


def _run_folders(root: Path) -> Iterator[Path]:
    """The run folders at or under `root`, in no order: folders with config.json (as it
    is settled: a run whose folder swap was cut short is read as its complete state).
    A run's own subfolders are not searched, nor hidden folders (other writers' staging
    folders among them), nor links to folders (they could loop), nor MLflow's artifact
    folders."""
    pending = [root]
    while pending:
        folder = pending.pop()
        if _is_file(fileio.settled(folder) / CONFIG_FILE) or _is_file(folder / CONFIG_FILE):
            yield folder
            continue
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError:  # unreadable or vanished meanwhile: nothing to list there
            continue
        names = {e.name for e in entries}
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                # `.NAME.next` or `.NAME.previous` alone: NAME's swap was cut short by a
                # killed process, and NAME is read from there (fileio.settled).
                for state in (".next", ".previous"):
                    stem = name[1:-len(state)] if name.endswith(state) else ""
                    if stem and stem not in names and _is_dir(entry):
                        names.add(stem)  # both name one run; settled() picks the state
                        pending.append(Path(folder) / stem)
                continue
            if _is_dir(entry) and name not in TRACKER_STORES:
                pending.append(Path(entry.path))


def _is_file(path: Path) -> bool:
    try:  # a folder without search permission raises, where a missing file is False
        return path.is_file()
    except OSError:
        return False


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


# --- reading one run -------------------------------------------------------------------------

def _read_row(path: Path, root: Path) -> RunRow:
    """The row of the run at `path`: each of its files read by its own reader, so that a
    damaged one costs only its columns."""
    run = RunFolder(path)
    relative = path.relative_to(root).as_posix() if path != root else (path.name or str(path))
    row = RunRow(run=relative, path=path)
    problems: list[str] = []

    def attempt(read, default=None):
        try:
            return read()
        except (ClearclassError, OSError, ValueError) as e:  # said in the row, not raised
            problems.append(_reason(e, path))
            return default

    record = attempt(run.record, {})
    settings = record.get("config") if isinstance(record.get("config"), dict) else {}
    if record and not settings:
        problems.append("config.json has no settings")
    row.settings = settings
    row.data = data_name(settings.get("data")) or ""
    row.model = _string(settings.get("model"))
    row.size = _count(settings.get("item_resize"))
    frozen, unfrozen = _count(settings.get("freeze_epochs")), _count(settings.get("epochs"))
    row.epochs_planned = frozen + unfrozen if frozen is not None and unfrozen is not None \
        else None
    row.device = _string(record.get("device"))
    row.history = attempt(run.history, [])
    row.epochs_done = len(row.history)
    if row.history:
        row.accuracy = _fraction(row.history[-1].accuracy)
    summary = attempt(run.summary, {})
    timings = summary.get("timings") if isinstance(summary.get("timings"), dict) else {}
    total = timings.get("total_seconds")
    row.seconds = float(total) if _number(total) else \
        (sum(e.seconds for e in row.history) if row.history else None)
    if run.model_dir.exists() or fileio.settled(run.model_dir).exists():
        info = attempt(run.model_info)
        if info is not None:
            row.classes = len(info.class_ids)
            training = info.training if isinstance(info.training, dict) else {}
            row.train_photos = _count(training.get("train_photos"))
            row.valid_photos = _count(training.get("valid_photos"))
            row.model = row.model or _string(info.architecture)
            row.size = row.size if row.size is not None else _count(info.item_resize)
    results = attempt(lambda: _evaluation_results(path), {})
    row.tta_accuracy = _fraction(results.get("tta_accuracy"))
    row.date = _saved_at(run)
    row.state = _state(row, path, bool(summary), bool(record))
    row.problem = "; ".join(problems)
    return row


def _evaluation_results(path: Path) -> dict:
    # The evaluation's own reader; imported here so that a listing without reports, and
    # the command's --help, never load the evaluation (NumPy, the predictor).
    from clearclass.evaluation.results import read_results

    return read_results(path / "report")


def _state(row: RunRow, path: Path, summarised: bool, recorded: bool) -> str:
    """finished (summary.json, written after the last epoch; or every epoch planned done and
    no checkpoint left), training (another process holds the run's lock), stopped
    (interrupted, or killed), or unreadable (neither its settings nor its epochs)."""
    all_done = row.epochs_planned is not None and row.epochs_done >= row.epochs_planned
    if summarised or (all_done and not fileio.settled(path / CHECKPOINT_DIR).exists()):
        return "finished"
    if _locked(path):
        return "training"
    return "stopped" if recorded or row.history else "unreadable"


def _locked(path: Path) -> bool:
    """Whether a process holds the lock `fileio.exclusive` takes on the run (`.NAME.lock`).

    Read from /proc/locks (Linux), without taking the lock: trying it would, for that
    instant, refuse a `clearclass train` starting on the run. Elsewhere, a lock file that is
    there counts as held (a killed process can leave one)."""
    lock = path.with_name(f".{path.name}.lock")
    try:
        inode = lock.stat().st_ino
    except OSError:
        return False
    try:
        held = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
    except OSError:
        return True
    return any(len(f) > 5 and f[5].rsplit(":", 1)[-1] == str(inode)
               for f in (line.split() for line in held.splitlines()))


def _saved_at(run: RunFolder) -> datetime.datetime | None:
    """When the run's last epoch was saved: metrics.csv's time (no file records a date;
    each epoch rewrites it, nothing after training does), else config.json's."""
    for file in (run.metrics_file, run.config_file):
        try:
            return datetime.datetime.fromtimestamp(fileio.settled(file).stat().st_mtime)
        except (OSError, ValueError, OverflowError):
            continue
    return None


def _reason(error: Exception, path: Path) -> str:
    """An error as a row's problem: its words, the run's own path left out, on one line."""
    text = str(error) if not isinstance(error, OSError) else \
        f"{error.strerror or error}" + (f": {Path(error.filename).name}" if error.filename
                                        else "")
    for prefix in (str(fileio.settled(path)), str(path)):
        text = text.replace(prefix + os.sep, "")
    first = text.split(". ")[0].split("\n")[0].rstrip(".")
    return first if len(first) <= 120 else first[:119] + "…"


# --- the settings that differ ---------------------------------------------------------------

def _mark_differences(rows: Sequence[RunRow]) -> list[str]:
    """The settings whose values differ between the runs (known in more than one), in
    config.json's order; each row's `differs` gets its own values of them."""
    compared = [r for r in rows if r.settings]
    keys: list[str] = []
    for row in compared:
        keys += [k for k in row.settings if k not in keys and k not in NOT_COMPARED]
    varying = [k for k in keys
               if len({_key(r.settings.get(k)) for r in compared}) > 1]
    for row in compared:
        shown = [f"{k}={_setting(row.settings.get(k))}" for k in varying]
        more = len(shown) - DIFFERS_SHOWN
        row.differs = ", ".join(shown[:DIFFERS_SHOWN]) + (f" (+{more} more)" if more > 0
                                                          else "")
    return varying


def _key(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _setting(value: object) -> str:
    if value is None:
        return "default"
    if isinstance(value, float):
        return f"{value:g}"
    text = str(value)
    return text if len(text) <= 24 else text[:23] + "…"


# --- values as the files give them: of any type in a damaged file ----------------------------

def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) \
        and value >= 0 else None


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) and value >= 0


def _fraction(value: object) -> float | None:
    return float(value) if _number(value) and value <= 1 else None


def _string(value: object) -> str:
    return value if isinstance(value, str) else ""


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _blank(value: object) -> object:
    return "" if value is None else value


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.2%}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else \
        f"{rest // 60:02d}:{rest % 60:02d}"


def check_plot_path(path: str | Path) -> tuple[Path, str]:
    """Where `--plot` writes the figure, and its format from the suffix (png, svg, pdf);
    a SettingError for a folder or another suffix.

    Example:
        print(check_plot_path("runs.svg"))  # (PosixPath('runs.svg'), 'svg')
    """
    from clearclass.figures import SAVED_FORMATS

    target = Path(path).expanduser()
    if target.is_dir():
        raise SettingError("plot", f"names a folder, {fileio.shown_name(str(target))}; give "
                                   f"a file such as {fileio.shown_name(str(target / 'runs.png'))}.")
    suffix = target.suffix.lower().lstrip(".")
    if suffix not in SAVED_FORMATS:
        raise SettingError("plot", f"must end in .png, .svg or .pdf (the figure's format); "
                                   f"got {fileio.shown_name(str(path))}.")
    return target, suffix
