"""What `train` returns: a run's folder, its epoch table and accuracy, shown in a notebook."""

from __future__ import annotations

import shlex
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from clearclass import pages
from clearclass.progress import LiveTable
from clearclass.run_folder import EpochRow, metrics_columns
from clearclass.training.config import TrainConfig
from clearclass.training.distributed import Processes


@dataclass
class TrainingRun:
    """What `train` returns: where the run lives, its epoch table and final accuracy.

    Example:
        run = clearclass.train("photos/", model="efficientnet_lite0", out="runs/dogs-1",
                               overwrite=True)
        print(run.accuracy, run.model_dir)
        report = run.evaluate()
    """

    run_dir: Path
    config: TrainConfig
    history: list[EpochRow] = field(default_factory=list)  # the epochs RUN holds
    timings: dict[str, float] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12], repr=False)
    processes: Processes = field(default_factory=Processes, repr=False, compare=False)

    @property
    def model_dir(self) -> Path:
        return self.run_dir / "model"

    @property
    def resume_command(self) -> str:
        return f"clearclass train --resume {shlex.quote(str(self.run_dir))}"

    @property
    def accuracy(self) -> float:
        """Validation accuracy after the last epoch (multi-label: fastai's accuracy_multi,
        the share of (photo, label) pairs decided right)."""
        return self.history[-1].accuracy if self.history else float("nan")

    @property
    def headline(self) -> str:
        """The last epoch's validation figures in words: accuracy, and a multi-label run's
        accuracy_multi with its F1 and mean average precision (at the model's thresholds)."""
        if not self.history:
            return "No epoch finished"
        last = self.history[-1]
        if not last.scores:
            return f"Validation accuracy {last.accuracy:.2%}"
        scores = last.scores
        return (f"Validation accuracy_multi {last.accuracy:.2%}, F1 micro "
                f"{scores['f1_micro']:.3f}, F1 macro {scores['f1_macro']:.3f}, mean average "
                f"precision {scores['mean_ap']:.3f}")

    def evaluate(self, data: str | Path | None = None, tta: bool = False,
                 device: str = "auto", exclude_training: bool = False):
        """Evaluate this run on its validation photos, or on `data` (see
        `clearclass.evaluate`)."""
        from clearclass.evaluation import evaluate

        return evaluate(self.run_dir, data=data, tta=tta, device=device,
                        exclude_training=exclude_training)

    def load(self, device: str = "auto"):
        """The trained classifier, ready to `predict` (see `clearclass.load`)."""
        from clearclass.predict import load

        return load(self.model_dir, device=device)

    def epoch_table(self) -> LiveTable:
        """The epoch table (`epoch, train_loss, valid_loss, accuracy, time, stage`; a
        multi-label run's with its F1 and mean average precision after accuracy)."""
        scores = list(self.history[0].scores) if self.history else []
        table = LiveTable(*metrics_columns(scores), live=False)
        for row in self.history:
            table.add_row(row.cells())
        return table

    def __repr__(self) -> str:
        return (f"TrainingRun({str(self.run_dir)!r}, {self.config.model}, "
                f"{len(self.history)} epoch(s), accuracy {self.accuracy:.2%})")

    def _repr_html_(self) -> str:
        return pages.render("training_run.html", run=self, table=self.epoch_table())
