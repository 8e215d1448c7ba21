"""The run folder: its layout, and every read and write of its files.

`clearclass train` writes RUN/ (`--out`, or runs/<data>-<model>):

    config.json    the settings, the run's id, the pretrained weights, the device, and the
                   SHA-256 of split.csv (`RunFolder.config`, `RunFolder.record`)
    split.csv      each photo's path, label and is_valid (`RunFolder.split`)
    metrics.csv    one row per finished epoch (`RunFolder.history`)
    skipped.csv    the files that could not be decoded (`RunFolder.skipped`)
    summary.json   the final accuracy, the epochs and the timings (`RunFolder.summary`)
    model/         the model bundle (`bundle.py`; `RunFolder.model_info`)
    checkpoint/    what resuming needs (`training/checkpoint.py`), until the run finishes
    advice/        the network's features of every photo, kept for reuse (`advice/features.py`)

Commands read and write a run only through `RunFolder` and `bundle.py`, so each file has
one reader, one writer, and one message per way it can be damaged, naming the file.
Readers look at `fileio.settled(path)`: a run whose folder swap a killed process left
half-done is read as its complete state.

Kept apart from the loop (which imports PyTorch) so that the command line can refuse a bad
`--out` before PyTorch loads, and so that evaluate, clean, serve and resume can read a run
without importing the training code.
"""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearclass import fileio
from clearclass.bundle import INFO_FILE, ModelInfo, bundle_folder, read_info
from clearclass.data.sources import (
    SPLIT_CHECKSUM,
    SPLIT_FILE,
    PhotoSet,
    parse_split,
    split_checksum,
    split_label_cell,
)
from clearclass.errors import RunError, SettingError, check_path
from clearclass.progress import clock
from clearclass.task import MultiLabel

if TYPE_CHECKING:
    from clearclass.training.config import TrainConfig

__all__ = ["METRICS_HEADER", "METRICS_WIDTHS", "RUN_FILES", "SCORE_COLUMNS", "EpochRow",
           "RunFolder", "metrics_columns",
           "check_run_dir", "parse_mmss", "resuming", "run_dir_for",
           "run_folder", "run_name", "run_path"]

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
SKIPPED_FILE = "skipped.csv"
SUMMARY_FILE = "summary.json"
MODEL_DIR = "model"
CHECKPOINT_DIR = "checkpoint"  # training/checkpoint.py's folder (that module imports PyTorch)

# Any of them marks a folder as a run.
RUN_FILES = (CONFIG_FILE, SPLIT_FILE, MODEL_DIR, CHECKPOINT_DIR)

METRICS_HEADER = ("epoch", "train_loss", "valid_loss", "accuracy", "time", "stage")
METRICS_WIDTHS = (6, 11, 11, 9, 6, 8)  # characters of each column of the epoch table
# What a multi-label run measures besides accuracy (fastai's accuracy_multi): its columns,
# after accuracy (task.multi_label_scores).
SCORE_COLUMNS = MultiLabel.score_names


def metrics_columns(scores: Sequence[str] = ()) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """metrics.csv's header and the epoch table's widths, with a task's `scores` after
    accuracy."""
    at = METRICS_HEADER.index("accuracy") + 1
    return (METRICS_HEADER[:at] + tuple(scores) + METRICS_HEADER[at:],
            METRICS_WIDTHS[:at] + (9,) * len(scores) + METRICS_WIDTHS[at:])
SKIPPED_HEADER = ("path", "reason")
SPLIT_HEADER = ("path", "label", "is_valid")


def read_json_object(source: Path, remedy: str) -> dict[str, Any] | None:
    """A JSON file that holds an object (config.json, summary.json, a report's
    results.json): its content, or None when it is missing. A RunError naming the file,
    and ending with `remedy`, when it is damaged."""
    try:
        data = json.loads(Path(source).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError too
        raise RunError(f"{source} is damaged ({type(e).__name__}: {e}). {remedy}") from None
    if not isinstance(data, dict):
        raise RunError(f"{source} is damaged (it holds {type(data).__name__}, not an "
                       f"object). {remedy}")
    return data


def _read_csv(file: Path, parse: Callable[[Iterable[str]], list]) -> list:
    """`parse` of a run's CSV file as it is settled; [] when there is none. Whatever makes
    it fail is a RunError naming the file."""
    path = fileio.settled(file)
    if not path.exists():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return parse(f)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, csv.Error) as e:
        raise RunError(f"{path} is damaged ({type(e).__name__}: {e}). Restore it from a "
                       "copy, or train the run again.") from None


def parse_mmss(mmss: str) -> float:
    """metrics.csv's `time` ("01:05") back in seconds (whole seconds, as it was written)."""
    minutes, _, seconds = mmss.partition(":")
    return int(minutes) * 60 + int(seconds or 0)


@dataclass
class EpochRow:
    """One finished epoch: a row of metrics.csv and of the epoch table."""

    epoch: int
    train_loss: float
    valid_loss: float
    accuracy: float  # multi-label: fastai's accuracy_multi
    seconds: float
    stage: str  # "frozen" or "unfrozen"
    scores: dict[str, float] = field(default_factory=dict)  # multi-label: SCORE_COLUMNS

    def cells(self) -> tuple:
        return (self.epoch, f"{self.train_loss:.6f}", f"{self.valid_loss:.6f}",
                f"{self.accuracy:.6f}", *(f"{v:.6f}" for v in self.scores.values()),
                clock(self.seconds), self.stage)


class RunFolder:
    """A run folder (RUN/): where each of its files is, and their checked readers and writers.

    `RunFolder(path)` checks nothing, so that the loop can write into a staging folder;
    `RunFolder.open(run)` is the one check that a folder a user gave is a run.

    Example:
        run = RunFolder.open("runs/dogs")
        print(run.config().model, run.history()[-1].accuracy)
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # The layout, written once.
        self.config_file = self.path / CONFIG_FILE
        self.split_file = self.path / SPLIT_FILE
        self.metrics_file = self.path / METRICS_FILE
        self.skipped_file = self.path / SKIPPED_FILE
        self.summary_file = self.path / SUMMARY_FILE
        self.model_dir = self.path / MODEL_DIR
        self.checkpoint_dir = self.path / CHECKPOINT_DIR

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @classmethod
    def open(cls, run: object, needs_model: bool = False) -> RunFolder:
        """The run folder that `run` names (a path, or what `clearclass.train` returns),
        as it is settled (`fileio.settled`), checked to be a run: a folder holding the
        split.csv and config.json that `clearclass train` writes. Anything else is a
        RunError that names the folder. With `needs_model`, RUN/model must be a model
        bundle too; a run stopped inside its first epoch (a checkpoint, no model yet) says
        how to go on."""
        given = run_path(run)
        folder = cls(fileio.settled(given))
        for file in (folder.split_file, folder.config_file):
            if not file.is_file():
                raise RunError(f"{folder.path} is not a training run (no {file.name}). Give "
                               "the folder that `clearclass train --out` wrote.")
        if needs_model:
            if not folder.model_dir.exists() and folder.checkpoint_dir.is_dir():
                raise RunError(f"{given} has no finished epoch yet, only a checkpoint inside "
                               f"the first one. Continue it with `clearclass train --resume "
                               f"{given}`.")
            bundle_folder(folder.model_dir)  # a ModelFileError: not a clearclass model
        return folder

    # --- readers --------------------------------------------------------------------------

    def _load_record(self) -> Any:
        """config.json's JSON value, as it is: raises OSError and ValueError as they come."""
        return json.loads(fileio.settled(self.config_file).read_text(encoding="utf-8"))

    def record(self) -> dict[str, Any]:
        """config.json's whole record: `config` (the settings), `run_id`, `pretrained`,
        `device` and split.csv's checksum. A RunError naming the file when it is missing,
        not JSON, or not an object."""
        source = fileio.settled(self.config_file)
        data = read_json_object(source, "Restore it, or train the run again.")
        if data is None:
            raise RunError(f"{source} is missing; a run folder holds the config.json that "
                           "`clearclass train` wrote. Restore it, or train the run "
                           "again.")
        return data

    def config(self, cannot: str = "the run cannot be resumed") -> TrainConfig:
        """The run's settings (config.json's `config`), checked as `clearclass train` checks
        them; `cannot` ends the message of a damaged file: what the caller cannot do."""
        from clearclass.training.config import TrainConfig

        source = fileio.settled(self.config_file)
        try:
            return TrainConfig.from_dict(self._load_record()["config"])
        except SettingError as e:  # a value of the wrong kind, named
            raise RunError(f"{source} is damaged ({str(e).rstrip('.')}); {cannot}.") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise RunError(f"{source} is damaged ({type(e).__name__}: {e}); {cannot}.") from None

    def _recorded_split_checksum(self) -> object:
        """What config.json records as split.csv's SHA-256 (`parse_split` checks it); None
        for a run trained before that record (or without config.json)."""
        config, split = fileio.settled(self.config_file), fileio.settled(self.split_file)
        try:
            return self._load_record().get(SPLIT_CHECKSUM)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, AttributeError) as e:
            raise RunError(f"{config} cannot be read ({type(e).__name__}: {e}), so "
                           f"{split} cannot be checked against the checksum it "
                           "records. Restore config.json, or train the run again.") from None

    def split(self, class_ids: Sequence[str] | None = None,
              task: str | None = None) -> PhotoSet:
        """The photos the run was trained on, as split.csv lists them, checked against the
        checksum config.json records (`data.sources.parse_split`). `class_ids` in the
        model's order and `task` ("single" or "multi"): by default, those of RUN/model."""
        if class_ids is None or task is None:
            info = self.model_info()
            class_ids = info.class_ids if class_ids is None else class_ids
            task = info.task if task is None else task
        folder = fileio.settled(self.path)
        return parse_split(folder, list(class_ids), self._recorded_split_checksum(), task)

    def history(self) -> list[EpochRow]:
        """The finished epochs, as metrics.csv lists them; [] when there is none yet."""

        def parse(f: Iterable[str]) -> list[EpochRow]:
            reader = csv.DictReader(f)
            missing = [c for c in METRICS_HEADER if c not in (reader.fieldnames or ())]
            if missing:
                raise ValueError(f"no column {', '.join(missing)}")
            rows = []
            for r in reader:
                if None in r or None in r.values():  # a row cut short, or too long
                    raise ValueError(f"line {reader.line_num} does not have "
                                     f"{len(reader.fieldnames)} cells")
                rows.append(EpochRow(int(r["epoch"]), float(r["train_loss"]),
                                     float(r["valid_loss"]), float(r["accuracy"]),
                                     parse_mmss(r["time"]), r["stage"],
                                     {c: float(r[c]) for c in SCORE_COLUMNS if c in r}))
            return rows

        return _read_csv(self.metrics_file, parse)

    def summary(self) -> dict[str, Any]:
        """summary.json, which a run gets once its last epoch is done: `valid_accuracy`,
        `epochs` and `timings` (seconds, `total_seconds` among them); {} when there is none
        (a run stopped or still training). A RunError naming the file when it is damaged."""
        return read_json_object(fileio.settled(self.summary_file),
                                "Restore it, or train the run again.") or {}

    def model_info(self) -> ModelInfo:
        """RUN/model's model.json, checked (`bundle.read_info`): a ModelFileError naming
        the file otherwise."""
        return read_info(fileio.settled(self.model_dir))

    def skipped(self) -> list[tuple[str, str]]:
        """The files training could not decode, with the reason: (path, reason) as
        skipped.csv lists them; [] when the file is not there."""

        def parse(f: Iterable[str]) -> list[tuple[str, str]]:
            reader = csv.reader(f)
            header = tuple(next(reader, ()))
            if header != SKIPPED_HEADER:
                raise ValueError(f"its columns are {', '.join(header)}, not "
                                 f"{', '.join(SKIPPED_HEADER)}")
            rows = []
            for line, row in enumerate(reader, start=2):
                if len(row) != len(SKIPPED_HEADER):
                    raise ValueError(f"line {line} has {len(row)} cells, not 2")
                rows.append((fileio.read_cell(row[0]), fileio.read_cell(row[1])))
            return rows

        return _read_csv(self.skipped_file, parse)

    # --- writers, into this folder (the loop calls them on its staging folder) ------------

    def write_split(self, photo_set: PhotoSet) -> None:
        """split.csv: every photo's absolute path, label and is_valid."""
        rows = [(str(p.path.resolve()), split_label_cell(p), p.is_valid)
                for p in photo_set.photos]
        fileio.write_csv(self.split_file, SPLIT_HEADER, rows)

    def write_config(self, config: TrainConfig, record: dict[str, Any]) -> None:
        """config.json: the settings, then `record` (run_id, pretrained, device), then
        split.csv's checksum, so split.csv must be written first."""
        # run_id is also in model.json: the two must agree in any state of the folder. The
        # split is written first, into the same change: its checksum is what split() checks.
        data = {"config": config.to_dict(), **record,
                SPLIT_CHECKSUM: split_checksum(self.path)}
        fileio.write_json(self.config_file, data)

    def write_history(self, rows: Iterable[EpochRow]) -> None:
        """metrics.csv: one row per finished epoch (a multi-label run's with its scores)."""
        rows = list(rows)
        header, _ = metrics_columns(list(rows[0].scores) if rows else ())
        fileio.write_csv(self.metrics_file, header, [r.cells() for r in rows])

    def write_skipped(self, skipped: Iterable[tuple[object, str]]) -> None:
        """skipped.csv: each file that could not be decoded, and why."""
        fileio.write_csv(self.skipped_file, SKIPPED_HEADER,
                         [(str(path), reason) for path, reason in skipped])

    def write_summary(self, summary: dict[str, Any]) -> None:
        """summary.json: the final accuracy, the epochs and the timings."""
        fileio.write_text(self.summary_file, json.dumps(summary, indent=2) + "\n")


# --- where a run lives, and who writes it ---------------------------------------------------

def run_name(config: TrainConfig) -> str:
    """The default name of a run's folder under runs/: `<data>-<model>`."""
    return f"{Path(config.data).stem or 'data'}-{config.model.replace('/', '_')}"


@contextlib.contextmanager
def run_folder(config: TrainConfig) -> Iterator[tuple[Path, fileio.FolderChange]]:
    """The run's folder, held by this process alone, and the empty staging folder its first
    state is written into (`TrainingRun.staging` until the first epoch is saved).

    Nothing in the folder changes until then; a run that fails or is interrupted before
    leaves it as it was (or absent).
    """
    run_dir = run_dir_for(config)
    with fileio.exclusive(run_dir):
        fileio.finish_interrupted_change(run_dir)
        check_run_dir(run_dir, config)
        staging = fileio.FolderChange(run_dir, start_empty=True)
        try:
            yield run_dir, staging
        finally:
            staging.discard()  # a no-op once the first epoch committed it


@contextlib.contextmanager
def resuming(run_dir: Path) -> Iterator[Path]:
    """A run folder to continue, held by this process alone (a swap a killed process left
    half-done is finished first)."""
    with fileio.exclusive(run_dir):
        fileio.finish_interrupted_change(run_dir)
        yield run_dir


def run_path(run: object) -> Path:
    """The folder a `run` argument of the API names: a path (str or pathlib.Path), or what
    `clearclass.train` returns. Anything else is a SettingError, not a TypeError from deep
    inside."""
    run_dir = getattr(run, "run_dir", run)  # a TrainingRun
    check_path("run", run_dir, "a run folder, or what clearclass.train returns")
    return Path(run_dir).expanduser()


def run_dir_for(config: TrainConfig) -> Path:
    """`out`, or the first free runs/<data>-<model>[-N]."""
    if config.out:
        return Path(config.out).expanduser()
    stem = run_name(config)
    run_dir, n = Path("runs") / stem, 2
    while fileio.settled(run_dir).exists() or run_dir.with_name(f".{run_dir.name}.lock").exists():
        run_dir = Path("runs") / f"{stem}-{n}"
        n += 1
    return run_dir


def check_run_dir(run_dir: Path, config: TrainConfig) -> None:
    """Refuse a run folder that is a file, holds a model (without `overwrite`), holds things
    that are not a run's, or lies inside DATA. Reads only: the command line calls it before
    PyTorch is imported, so that such a mistake is told at once."""
    found = RunFolder(fileio.settled(run_dir))  # what is there, even while a swap is half-done
    data = Path(config.data).expanduser().resolve()
    if data.is_dir() and found.path.resolve().is_relative_to(data):
        # Its figures would be read as photos of a class named after it next time.
        raise SettingError("out", f"{run_dir} is inside DATA ({config.data}); put runs "
                                  "beside the photos, such as runs/NAME.")
    if config.out:
        if found.path.exists() and not found.path.is_dir():
            raise SettingError("out", f"names a file, {run_dir}; give the folder to create "
                                      "for the run.")
        if found.checkpoint_dir.is_dir() and not config.overwrite:
            raise RunError(
                f"{run_dir} holds a run that did not finish. Continue it with `clearclass "
                f"train --resume {run_dir}`, choose another --out, or pass --overwrite to "
                "replace it.")
        if (found.model_dir / INFO_FILE).is_file() and not config.overwrite:
            raise RunError(
                f"{run_dir} already holds a trained model. Choose another --out, or pass "
                "--overwrite to replace it."
            )
        if found.path.is_dir() and any(found.path.iterdir()) and not any(
                (found.path / name).exists() for name in RUN_FILES):
            # Replacing the folder would delete whatever the user keeps there.
            names = ", ".join(sorted(p.name for p in found.path.iterdir())[:3])
            raise RunError(f"{run_dir} is not a clearclass run folder (it holds {names}); "
                           "choose another --out, such as a new folder under runs/.")

