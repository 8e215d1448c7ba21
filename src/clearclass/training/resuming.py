"""Resuming a run: its settings, its epochs and its checkpoint, read back and checked.

What the loop needs to continue a run exactly where it stopped; `loop.resume` then trains
from the checkpoint's position as `train` would have.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clearclass import fileio
from clearclass.errors import RunError
from clearclass.progress import say
from clearclass.run_folder import RunFolder
from clearclass.training.checkpoint import Checkpoint, read_checkpoint
from clearclass.training.config import RESUME_SETTINGS, TrainConfig, make_config
from clearclass.training.distributed import Processes
from clearclass.training.run import TrainingRun
from clearclass.training.saving import save_onnx


def resumed_config(run_dir: Path, settings: dict[str, Any]) -> TrainConfig:
    """The run's own settings (RUN/config.json), with `settings` that may change only how
    it runs (RESUME_SETTINGS)."""
    if not fileio.settled(run_dir).exists():
        raise RunError(f"{run_dir} does not exist. A run that stops before its first "
                       "checkpoint (the end of its first epoch, or --checkpoint-minutes into "
                       "it) leaves nothing to resume: start it again.")
    folder = RunFolder.open(run_dir)
    for name in settings:
        if name not in RESUME_SETTINGS:
            raise RunError(f"A resumed run keeps its own settings ({run_dir}/config.json); "
                           f"{name} cannot change. To train with other settings, start a "
                           "new run.")
    return make_config(folder.config(), settings)


def resumed_run(run_dir: Path, config: TrainConfig,
                processes: Processes) -> tuple[TrainingRun, Checkpoint | None]:
    """The run as its checkpoint left it (the epochs before it), and the checkpoint; a run
    without one is returned whole, with None."""
    checkpoint = read_checkpoint(run_dir)
    run = TrainingRun(run_dir, config, processes=processes)
    run.history = RunFolder(run_dir).history()
    if checkpoint is not None:
        run.run_id = checkpoint.run_id
        run.history = run.history[:checkpoint.position.epochs_done]
        say(f"Resuming {run_dir} at epoch {checkpoint.position.epochs_done}, batch "
            f"{checkpoint.position.step}.")
    return run, checkpoint


def finished_run(run: TrainingRun) -> TrainingRun:
    """A run with no checkpoint: finished (nothing to do), or not resumable."""
    total = run.config.freeze_epochs + run.config.epochs
    if len(run.history) < total:
        raise RunError(
            f"{run.run_dir} has no checkpoint to resume from: it holds {len(run.history)} of "
            f"{total} epochs, saved by a clearclass older than checkpoints, or stopped before "
            "its first save. Train again with --overwrite.")
    if run.processes.main and run.config.onnx and not (run.model_dir / "model.onnx").exists():
        save_onnx(run)  # a run killed between its last epoch and the export
    say(f"{run.run_dir} finished all {total} epochs; nothing to resume (validation accuracy "
        f"{run.accuracy:.2%}).")
    return run
