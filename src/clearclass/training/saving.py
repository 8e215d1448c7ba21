"""Saving a run as it trains: each epoch's row, model and checkpoint swapped in as one
change of the run folder, and checkpoints inside an epoch.

The run folder changes as a unit (`fileio.FolderChange`): until the first epoch is saved
the run is written beside it (the staging folder of `run_folder.run_folder`), and each
epoch's metrics, model and checkpoint are swapped in together. Whenever the process dies,
RUN holds the previous complete state or the next one; with `overwrite`, the previous run
stays until the new one has saved. Only the process of rank 0 writes.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from clearclass import fileio
from clearclass.bundle import ModelInfo, save_bundle
from clearclass.data.sources import PhotoSet
from clearclass.errors import RunError
from clearclass.model import Pretrained
from clearclass.onnx_runtime import export_bundle
from clearclass.progress import warn
from clearclass.run_folder import EpochRow, RunFolder
from clearclass.task import DEFAULT_THRESHOLD
from clearclass.tracking import Tracking
from clearclass.training.checkpoint import CHECKPOINT_DIR, Position, write_checkpoint
from clearclass.training.config import TrainConfig
from clearclass.training.run import TrainingRun


@dataclass
class StageState:
    """What a checkpoint saves of the stage being trained."""

    name: str  # "frozen" or "unfrozen"
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler


class RunSaver:
    """Writes the run folder of `run` (process 0 only; the others keep count).

    `staging`: the folder a new run's first state is written into until its first epoch is
    saved; `saved`: where the last checkpoint in RUN stands (a resumed run's, at first).
    """

    def __init__(self, run: TrainingRun, staging: fileio.FolderChange | None = None,
                 saved: Position | None = None) -> None:
        self.run, self.staging, self.saved = run, staging, saved
        self.last_save = time.monotonic()
        self.model: nn.Module | None = None
        self.info: ModelInfo | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self.tracking = Tracking()

    @property
    def folder(self) -> RunFolder:
        """Where the run's files are written now: RUN, or its staging folder."""
        return RunFolder(self.staging.path if self.staging is not None else self.run.run_dir)

    def attach(self, model: nn.Module, info: ModelInfo, scaler: torch.amp.GradScaler | None,
               tracking: Tracking | None = None) -> None:
        """The model (and what describes it) that every save writes, and the trackers that
        each save sends to (`tracking.py`)."""
        self.model, self.info, self.scaler = model, info, scaler
        self.tracking = tracking or Tracking()

    def checkpoint_due(self) -> bool:
        minutes = self.run.config.checkpoint_minutes
        return minutes > 0 and time.monotonic() - self.last_save >= minutes * 60

    def epoch_done(self, row: EpochRow, stage: StageState, finished: bool) -> None:
        """Save the epoch's row, the model and the checkpoint (none once `finished`) into
        the run folder, as one change."""
        run = self.run
        self.last_save = time.monotonic()
        if not run.processes.main:
            run.history.append(row)
            return
        rows = [*run.history, row]
        self.info.training.update(epochs_done=len(rows), valid_accuracy=row.accuracy,
                                  valid_loss=row.valid_loss)
        position = Position(row.epoch + 1)
        self.tracking.epoch(row)

        def write(folder: Path) -> None:
            RunFolder(folder).write_history(rows)
            self.tracking.write(folder)
            save_bundle(self.model, self.info, folder / "model")
            if finished:  # the model is the whole result now; no need to keep 2-3x its size
                shutil.rmtree(folder / CHECKPOINT_DIR, ignore_errors=True)
            else:
                self._write_checkpoint(folder, position, stage)

        self._change(write, f"epoch {row.epoch}")
        run.history.append(row)  # only once saved: history is what RUN holds
        self.tracking.saved()
        self.saved = None if finished else position

    def checkpoint(self, position: Position, stage: StageState, after_stop: bool) -> None:
        """A checkpoint inside an epoch (every checkpoint_minutes, or before stopping)."""
        self.last_save = time.monotonic()
        if not self.run.processes.main:
            return
        def write(folder: Path) -> None:
            self._write_checkpoint(folder, position, stage)
            self.tracking.write(folder)

        try:
            self._change(write, f"a checkpoint at epoch {position.epochs_done}, batch "
                                f"{position.step}")
        except RunError as e:
            if after_stop:
                raise
            warn(f"{e} Training goes on; the next checkpoint is due in "
                 f"{self.run.config.checkpoint_minutes:g} minutes.")
            return
        self.saved = position
        self.tracking.saved()

    def holds(self) -> str:
        """What the run folder holds now, in words, for messages after an interruption."""
        run, saved, done = self.run, self.saved, len(self.run.history)
        model = f"the model as of epoch {done - 1}" if done else "no finished epoch"
        if saved is not None and saved.step:
            return (f"{run.run_dir} holds a checkpoint at epoch {saved.epochs_done}, batch "
                    f"{saved.step} ({model})")
        if done:
            return f"{run.run_dir} holds {model} and its checkpoint"
        if run.run_dir.exists():
            return f"no epoch had finished; {run.run_dir} still holds the previous run"
        return "no epoch had finished, so nothing was saved"

    def interrupted(self) -> None:
        """Say what RUN holds after Ctrl-C, and how to go on."""
        if not self.run.processes.main:
            return
        self.tracking.stopped(interrupted=True)
        if self.saved is not None:
            warn(f"Training stopped; {self.holds()}. Continue with: {self.run.resume_command}")
        else:
            warn(f"Training interrupted; {self.holds()}.")

    def _write_checkpoint(self, folder: Path, position: Position, stage: StageState) -> None:
        write_checkpoint(folder / CHECKPOINT_DIR, model=self.model, info=self.info,
                         run_id=self.run.run_id, position=position, stage=stage.name,
                         optimizer=stage.optimizer, scheduler=stage.scheduler,
                         scaler=self.scaler)

    def _change(self, write: Callable[[Path], None], what: str) -> None:
        """Write the run folder's next state with `write` and swap it in whole (the first
        time, the staged run with it); a full disk keeps the previous state and says so."""
        run = self.run
        change = self.staging or fileio.FolderChange(run.run_dir)
        try:
            write(change.path)
            change.commit()
        except OSError as e:
            change.discard()
            raise RunError(f"Could not save {what} ({e.strerror or e}: "
                           f"{e.filename or run.run_dir}); {self.holds()}. Free some space (or "
                           "fix the folder's permissions), then "
                           + (f"continue with {run.resume_command}." if self.saved else
                              "train again.")) from e
        except BaseException:
            change.discard()
            raise
        finally:
            self.staging = None
        self.last_save = time.monotonic()


def finish(run: TrainingRun, started: float, tracking: Tracking | None = None) -> None:
    """After the last epoch: model.onnx beside the weights, summary.json, and the model to
    the trackers."""
    t0 = time.perf_counter()
    save_onnx(run)
    run.timings["onnx_export_seconds"] = time.perf_counter() - t0
    run.timings["total_seconds"] = time.perf_counter() - started
    RunFolder(run.run_dir).write_summary({
        "valid_accuracy": run.accuracy,
        "epochs": [r.__dict__ for r in run.history],
        "timings": run.timings,
    })
    if tracking is not None:
        tracking.finish(run.run_dir)


def save_onnx(run: TrainingRun) -> None:
    """model.onnx beside the weights, so that prediction can run in ONNX Runtime."""
    if not run.config.onnx or not run.history:
        return
    try:
        export_bundle(run.model_dir)
    except Exception as e:  # the safetensors bundle is complete without it
        warn(f"Could not export {run.config.model} to ONNX ({type(e).__name__}: {e}); "
             "prediction will use PyTorch.")


def model_info(config: TrainConfig, photo_set: PhotoSet, pretrained: Pretrained,
               run_id: str) -> ModelInfo:
    """What the bundle says of the model: classes, preprocessing, where it came from."""
    return ModelInfo(
        architecture=config.model,
        class_ids=list(photo_set.class_ids),
        class_names=photo_set.display_names,
        item_resize=config.item_resize,
        resize_method=config.resize_method,
        mean=pretrained.mean,
        std=pretrained.std,
        training={"run_id": run_id, "data": str(Path(config.data).resolve()),
                  "pretrained": pretrained.describe(),
                  "train_photos": len(photo_set.train), "valid_photos": len(photo_set.valid)},
        task=photo_set.task,
        # Multi-label: --threshold for every label; with auto, each epoch's tuned ones
        # replace these before the model is saved (loop.decide_thresholds).
        thresholds=([config.threshold_value or DEFAULT_THRESHOLD] * len(photo_set.class_ids)
                    if photo_set.task == "multi" else None),
    )
