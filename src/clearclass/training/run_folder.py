"""Where a run lives: its folder's name, what may be replaced, and who writes it.

Kept apart from the loop (which imports PyTorch) so that the command line can refuse a bad
`--out` before PyTorch loads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from clearclass import fileio
from clearclass.errors import RunError, SettingError, check_path
from clearclass.training.config import TrainConfig


def run_name(config: TrainConfig) -> str:
    """The default name of a run's folder under runs/: `<data>-<model>`."""
    return f"{Path(config.data).stem or 'data'}-{config.model.replace('/', '_')}"


# Any of them marks a folder as a run.
RUN_FILES = ("config.json", "split.csv", "model", "checkpoint")


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
    found = fileio.settled(run_dir)  # what is there, even while a swap is half-done
    data = Path(config.data).expanduser().resolve()
    if data.is_dir() and found.resolve().is_relative_to(data):
        # Its figures would be read as photos of a class named after it next time.
        raise SettingError("out", f"{run_dir} is inside DATA ({config.data}); put runs "
                                  "beside the photos, such as runs/NAME.")
    if config.out:
        if found.exists() and not found.is_dir():
            raise SettingError("out", f"names a file, {run_dir}; give the folder to create "
                                      "for the run.")
        if (found / "checkpoint").is_dir() and not config.overwrite:
            raise RunError(
                f"{run_dir} holds a run that did not finish. Continue it with `clearclass "
                f"train --resume {run_dir}`, choose another --out, or pass --overwrite to "
                "replace it.")
        if (found / "model" / "model.json").is_file() and not config.overwrite:
            raise RunError(
                f"{run_dir} already holds a trained model. Choose another --out, or pass "
                "--overwrite to replace it."
            )
        if found.is_dir() and any(found.iterdir()) and not any(
                (found / name).exists() for name in RUN_FILES):
            # Replacing the folder would delete whatever the user keeps there.
            names = ", ".join(sorted(p.name for p in found.iterdir())[:3])
            raise RunError(f"{run_dir} is not a clearclass run folder (it holds {names}); "
                           "choose another --out, such as a new folder under runs/.")
