"""Sending a run to TensorBoard and MLflow: `clearclass train --track tensorboard|mlflow`.

Off by default: the run folder holds everything without them. With them:
- TensorBoard: event files in RUN/tensorboard/: the training loss and learning rate of every
  step, the validation loss and accuracy of every epoch, the settings as hparams and one
  batch of augmented photos; `evaluate` adds the report's figures and its per-class table.
  `tensorboard --logdir runs` shows every run.
- MLflow: a run in the store of MLFLOW_TRACKING_URI, else in a SQLite store beside the run
  folders (RUNS/mlflow.db, artifacts in RUNS/mlartifacts), in the experiment named after the
  data's folder (or `--experiment`): every setting as a param, the metrics by step and by
  epoch, tags (clearclass's version, classes, photos, device), the model bundle and, in
  MLflow's `onnx` flavour, model.onnx (image -> logits and probabilities), which `mlflow
  models serve` serves; `evaluate` adds its report.

A resumed run goes on in the same TensorBoard folder and the same MLflow run
(RUN/tracking.json says which); under torchrun only the process of rank 0 tracks. A tracker
that fails (a server that cannot be reached) is one warning, and the run goes on without it:
nothing in RUN depends on a tracker.

The run folder is swapped whole at every save (`fileio.FolderChange`), so no writer can
append to RUN/tensorboard as training goes: this process keeps its events and writes them,
with TensorBoard's own protos and record writer, into each saved state of the folder. Its
file only grows, so a TensorBoard watching RUN reads it as it would a live writer's.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import clearclass
from clearclass import fileio
from clearclass.errors import SettingError
from clearclass.progress import say, warn

if TYPE_CHECKING:
    import torch

    from clearclass.run_folder import EpochRow

TRACKERS = ("tensorboard", "mlflow")
TENSORBOARD_DIR = "tensorboard"
TRACKING_FILE = "tracking.json"  # the MLflow run a run folder sends to
LOCAL_STORE = "mlflow.db"  # beside the run folders, without MLFLOW_TRACKING_URI
LOCAL_ARTIFACTS = "mlartifacts"
PHOTOS_SHOWN = 16  # augmented photos in TensorBoard's image of the first batch
METRICS_PER_REQUEST = 1000  # MLflow's most metrics in one log_batch
# MLflow's client retries a request 7 times with a backoff factor of 2 and waits 120 s for
# an answer: minutes of a training spent on a server that is down. These apply unless the
# environment sets them.
MLFLOW_PATIENCE = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                   "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                   "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def check_trackers(value: Any) -> tuple[str, ...]:
    """`track` as a tuple of known tracker names, each once (a single name is welcome)."""
    names = (value,) if isinstance(value, str) else tuple(value or ())
    for name in names:
        if name not in TRACKERS:
            import difflib

            close = difflib.get_close_matches(str(name), TRACKERS, n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise SettingError("track", f"must be {' or '.join(TRACKERS)} (give it once for "
                                        f"each); got {name!r}.{hint}")
    return tuple(dict.fromkeys(names))


def install_hint(tracker: str) -> str:
    return f"{tracker} is not installed: pip install 'clearclass[track]'"


def require(trackers: Sequence[str]) -> None:
    """A missing library is said before any work, in one line."""
    import importlib.util

    module = {"tensorboard": "tensorboard", "mlflow": "mlflow"}
    for name in trackers:
        if importlib.util.find_spec(module[name]) is None:
            raise SettingError("track", install_hint(name) + ".")


@dataclass
class RunFacts:
    """What the trackers are told of a run when it starts."""

    run_dir: Path  # where the run lives (it may still be written beside it, staged)
    settings: dict[str, Any]
    data_name: str
    classes: list[str]
    train_photos: int
    valid_photos: int
    device: str
    experiment: str | None = None
    resumed: bool = False  # from a checkpoint: the trackers go on where they were
    history: list[EpochRow] = field(default_factory=list)  # the epochs done, when resuming


class Tracking:
    """The trackers of one training process; `Tracking()` tracks nothing.

    The loop calls `step` and `photos`; the run's saver calls `epoch`, `write` (into the
    run folder's next state) and `saved` (once it is swapped in); the end of the run calls
    `finish`, or `stopped`.
    """

    def __init__(self, tensorboard: _TensorBoard | None = None,
                 mlflow: _Mlflow | None = None) -> None:
        self.tensorboard, self.mlflow = tensorboard, mlflow
        self._steps: list[tuple[int, torch.Tensor, float]] = []  # loss still on the device
        self.wants_photos = tensorboard is not None

    @classmethod
    def start(cls, trackers: Sequence[str], facts: RunFacts) -> Tracking:
        return cls(_started("TensorBoard", _TensorBoard, facts) if "tensorboard" in trackers
                   else None,
                   _started("MLflow", _Mlflow.start, facts) if "mlflow" in trackers else None)

    def step(self, step: int, loss: torch.Tensor, learning_rate: float) -> None:
        """One training step's loss (read from the device only when saved) and rate."""
        if self.tensorboard or self.mlflow:
            self._steps.append((step, loss.detach(), learning_rate))

    def photos(self, images: torch.Tensor) -> None:
        """The first batch of augmented photos (0-1, NCHW), once."""
        self.wants_photos = False
        self._call("tensorboard", lambda t: t.photos(images))

    def epoch(self, row: EpochRow) -> None:
        self._flush_steps()
        for name in ("tensorboard", "mlflow"):
            self._call(name, lambda t: t.epoch(row))

    def write(self, folder: Path) -> None:
        """Into the run folder's next state: the events so far and which MLflow run."""
        self._flush_steps()
        # A file of the run, like metrics.csv: an OSError is the save's (a full disk).
        self._call("tensorboard", lambda t: t.write(folder))
        if self.mlflow is not None:
            fileio.write_json(folder / TRACKING_FILE, {"mlflow": self.mlflow.where()})

    def saved(self) -> None:
        """Once RUN holds the new state: what MLflow has not been sent yet."""
        self._call("mlflow", lambda t: t.send())

    def finish(self, run_dir: Path) -> None:
        self._flush_steps()
        self._call("mlflow", lambda t: t.finish(run_dir))

    def stopped(self, interrupted: bool) -> None:
        """The run stopped before its end (Ctrl-C, or an error): MLflow is told."""
        self._call("mlflow", lambda t: t.end("KILLED" if interrupted else "FAILED"))

    def _flush_steps(self) -> None:
        if not self._steps:
            return
        import torch

        losses = torch.stack([loss for _, loss, _ in self._steps]).float().cpu().tolist()
        steps = [(s, loss, rate) for (s, _, rate), loss in zip(self._steps, losses)]
        self._steps = []
        for name in ("tensorboard", "mlflow"):
            self._call(name, lambda t: t.steps(steps))

    def _call(self, attribute: str, action: Any) -> None:
        tracker = getattr(self, attribute)
        if tracker is None:
            return
        try:
            action(tracker)
        except Exception as e:
            if attribute == "tensorboard" and isinstance(e, OSError):
                raise  # a file of the run folder: the saver says what to do
            setattr(self, attribute, None)
            warn(_failure(tracker.title, e))


def _started(name: str, make: Any, facts: RunFacts) -> Any:
    """A tracker made by `make`; one that cannot start (a server down, a store it may not
    write) is a warning and None, and the run goes on without it."""
    try:
        return make(facts)
    except Exception as e:
        warn(_failure(name, e))
        return None


def _failure(name: str, error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if len(text) > 200:
        text = text[:200] + "..."
    return (f"{name} failed ({type(error).__name__}: {text}); the run goes on without it. "
            "Its metrics and model stay in the run folder (metrics.csv, model/).")


# --- TensorBoard ---------------------------------------------------------------------------

class _TensorBoard:
    title = "TensorBoard"

    def __init__(self, facts: RunFacts) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from torch.utils.tensorboard import summary

        started = time.time()
        # TensorBoard's naming, to the nanosecond: a run stopped and resumed within a second,
        # in one process, writes a second file, and TensorBoard reads it after the first.
        self.file = (f"events.out.tfevents.{int(started):010d}.{time.time_ns():020d}."
                     f"{socket.gethostname()}.{os.getpid()}.clearclass")
        self.events = [Event(wall_time=started, file_version="brain.Event:2")]
        if not facts.resumed:  # the settings once, by the run's first process
            hparams = {k: _hparam(v) for k, v in facts.settings.items()}
            hparams.update(classes=len(facts.classes), train_photos=facts.train_photos,
                           valid_photos=facts.valid_photos, device=facts.device)
            for part in summary.hparams(hparams, {"valid/accuracy": 0.0, "valid/loss": 0.0}):
                self._add(part, 0)

    def _add(self, summary: Any, step: int, wall_time: float | None = None) -> None:
        from tensorboard.compat.proto.event_pb2 import Event

        self.events.append(Event(wall_time=wall_time or time.time(), step=step,
                                 summary=summary))

    def steps(self, steps: list[tuple[int, float, float]]) -> None:
        from torch.utils.tensorboard import summary

        for step, loss, rate in steps:
            self._add(summary.scalar("train/loss", loss), step)
            self._add(summary.scalar("train/learning_rate", rate), step)

    def photos(self, images: torch.Tensor) -> None:
        from torch.utils.tensorboard import summary
        from torchvision.utils import make_grid

        grid = make_grid(images[:PHOTOS_SHOWN].detach().float().clamp(0, 1).cpu(), nrow=4)
        self._add(summary.image("augmented photos", grid, dataformats="CHW"), 0)

    def epoch(self, row: EpochRow) -> None:
        from torch.utils.tensorboard import summary

        for tag, value in (("valid/loss", row.valid_loss), ("valid/accuracy", row.accuracy),
                           *((f"valid/{name}", v) for name, v in row.scores.items()),
                           ("train/epoch_loss", row.train_loss),
                           ("train/epoch_seconds", row.seconds)):
            self._add(summary.scalar(tag, value), row.epoch)

    def write(self, folder: Path) -> None:
        target = folder / TENSORBOARD_DIR / self.file
        target.parent.mkdir(exist_ok=True)
        # In the next state, this file is a hard link to the one RUN holds now (`fileio.
        # FolderChange`): replace it, never write through it.
        target.unlink(missing_ok=True)
        with open(target, "wb") as f:
            _write_events(f, self.events)


def _write_events(f: Any, events: Sequence[Any]) -> None:
    from tensorboard.summary.writer.record_writer import RecordWriter

    writer = RecordWriter(f)
    for event in events:
        writer.write(event.SerializeToString())
    f.flush()


def _hparam(value: Any) -> Any:
    """A setting as TensorBoard's hparams take it: a number, text or a switch."""
    if isinstance(value, (bool, int, float)):
        return value
    if value is None:
        return "default"
    if isinstance(value, (list, tuple)):
        value = ",".join(map(str, value)) or "none"
    # A name that is not UTF-8 (a data folder in Latin-1) as \xe9: protobuf and JSON, which
    # carry it to TensorBoard and MLflow, take valid UTF-8 only.
    return fileio.shown_name(str(value))


# --- MLflow --------------------------------------------------------------------------------

@contextlib.contextmanager
def _patient_enough() -> Iterator[None]:
    """MLflow's client with few retries and a short wait, unless the environment says."""
    import logging

    added = {k: v for k, v in MLFLOW_PATIENCE.items() if k not in os.environ}
    os.environ.update(added)
    # Each retry is a warning of urllib3's; the one warning a failure gets is clearclass's.
    retries = logging.getLogger("urllib3.connectionpool")
    level = retries.level
    retries.setLevel(logging.ERROR)
    try:
        yield
    finally:
        retries.setLevel(level)
        for key in added:
            os.environ.pop(key, None)


def local_store(run_dir: Path) -> str:
    """The tracking URI of the SQLite store beside the run folders."""
    return "sqlite:///" + (Path(run_dir).expanduser().resolve().parent / LOCAL_STORE).as_posix()


class _Mlflow:
    title = "MLflow"

    def __init__(self, client: Any, uri: str, experiment_id: str, run_id: str) -> None:
        self.client, self.uri = client, uri
        self.experiment_id, self.run_id = experiment_id, run_id
        self.pending: list[Any] = []
        self.epochs_sent: set[int] = set()

    def where(self) -> dict[str, str]:
        return {"tracking_uri": self.uri, "experiment_id": self.experiment_id,
                "run_id": self.run_id}

    @classmethod
    def start(cls, facts: RunFacts) -> _Mlflow:
        import logging

        # The store's first use prints its database migrations at INFO.
        for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
            logging.getLogger(name).setLevel(logging.WARNING)
        from mlflow import MlflowClient

        saved = _saved_run(facts.run_dir) if facts.resumed else None
        with _patient_enough():
            if saved is not None:  # the same run goes on, where it lives
                client = MlflowClient(tracking_uri=saved["tracking_uri"])
                client.update_run(saved["run_id"], status="RUNNING")
                tracker = cls(client, saved["tracking_uri"], saved["experiment_id"],
                              saved["run_id"])
                sent = client.get_metric_history(saved["run_id"], "valid_accuracy")
                tracker.epochs_sent = {m.step for m in sent}
                tracker.catch_up(facts.history)
                say(f"MLflow: run {saved['run_id']} goes on at {saved['tracking_uri']}.")
                return tracker
            uri = os.environ.get("MLFLOW_TRACKING_URI") or local_store(facts.run_dir)
            if uri.startswith("sqlite:///"):
                _check_sqlite(Path(uri[len("sqlite:///"):].split("?")[0]))
            client = MlflowClient(tracking_uri=uri)
            name = fileio.shown_name(facts.experiment or facts.data_name)
            experiment_id = _experiment(client, name, uri, facts.run_dir)
            tags = {"clearclass.version": clearclass.__version__,
                    "classes": str(len(facts.classes)),
                    "class_names": _limited(", ".join(facts.classes), 5000),
                    "train_photos": str(facts.train_photos),
                    "valid_photos": str(facts.valid_photos),
                    "device": facts.device, "data": facts.data_name,
                    "run_folder": str(Path(facts.run_dir).expanduser().resolve())}
            tags = {k: _hparam(v) for k, v in tags.items()}
            run = client.create_run(experiment_id, run_name=_hparam(Path(facts.run_dir).name),
                                    tags=tags)
            tracker = cls(client, uri, experiment_id, run.info.run_id)
            from mlflow.entities import Param

            params = [Param(k, _limited(str(_hparam(v)), 6000))
                      for k, v in facts.settings.items()]
            for first in range(0, len(params), 100):  # MLflow's most params in one request
                client.log_batch(run.info.run_id, params=params[first:first + 100])
            tracker.catch_up(facts.history)  # a resumed run whose first start failed
        shown = f"experiment {name!r} at {uri}"
        if "MLFLOW_TRACKING_URI" not in os.environ:
            shown += f" (see it with: mlflow ui --backend-store-uri {uri})"
        say(f"MLflow: run {run.info.run_id} in {shown}.")
        return tracker

    def catch_up(self, history: Sequence[EpochRow]) -> None:
        """The epochs RUN holds that the MLflow run lacks (a stop came between)."""
        for row in history:
            self.epoch(row)
        self.send()

    def steps(self, steps: list[tuple[int, float, float]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for step, loss, rate in steps:
            self.pending += [Metric("train_loss_step", loss, now, step),
                             Metric("learning_rate", rate, now, step)]

    def epoch(self, row: EpochRow) -> None:
        from mlflow.entities import Metric

        if row.epoch in self.epochs_sent:
            return
        now = int(time.time() * 1000)
        self.pending += [Metric(name, float(value), now, row.epoch) for name, value in (
            ("train_loss", row.train_loss), ("valid_loss", row.valid_loss),
            ("valid_accuracy", row.accuracy),
            *((f"valid_{name}", v) for name, v in row.scores.items()),  # multi-label
            ("epoch_seconds", row.seconds))]
        self.epochs_sent.add(row.epoch)

    def send(self) -> None:
        with _patient_enough():
            while self.pending:
                self.client.log_batch(self.run_id, metrics=self.pending[:METRICS_PER_REQUEST])
                del self.pending[:METRICS_PER_REQUEST]

    def finish(self, run_dir: Path) -> None:
        self.send()
        model_dir = Path(run_dir) / "model"
        with _patient_enough():
            for name in ("config.json", "metrics.csv", "split.csv"):
                if (Path(run_dir) / name).is_file():
                    self.client.log_artifact(self.run_id, str(Path(run_dir) / name))
            self.client.log_artifacts(self.run_id, str(model_dir), "model")
            if (model_dir / "model.onnx").is_file():
                self._log_onnx(model_dir)
            self._terminate("FINISHED")

    def _terminate(self, status: str) -> None:
        """MLflow's run ended; the links MLflow prints then are said as clearclass's
        messages are (none under --quiet; never an emoji a console cannot encode)."""
        import io

        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            self.client.set_terminated(self.run_id, status)
        for line in printed.getvalue().splitlines():
            text = line.encode("ascii", "ignore").decode().strip()
            if text:
                say(f"MLflow: {text[0].lower()}{text[1:]}.")

    def _log_onnx(self, model_dir: Path) -> None:
        """model.onnx in MLflow's onnx flavour, which `mlflow models serve` serves: image ->
        logits and probabilities (softmax; a multi-label model's sigmoids), each N x
        classes."""
        import mlflow.onnx
        import numpy as np
        import onnx
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        from clearclass.bundle import read_info

        info = read_info(model_dir)
        side, classes = info.item_resize, len(info.class_ids)
        network = onnx.load(str(model_dir / "model.onnx"))
        # The file's own outputs: onnx_runtime.BUNDLE_OUTPUTS, or "logits" alone in a file
        # exported before the probabilities were added.
        outputs = [output.name for output in network.graph.output]
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, side, side), "image")]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, classes), name)
                            for name in outputs]))
        with tempfile.TemporaryDirectory() as folder:
            flavour = Path(folder) / "onnx_model"
            mlflow.onnx.save_model(network, str(flavour), signature=signature)
            self.client.log_artifacts(self.run_id, str(flavour), "onnx_model")

    def end(self, status: str) -> None:
        with _patient_enough():
            self.send()
            self._terminate(status)


def _check_sqlite(path: Path) -> None:
    """A SQLite store that can be opened, said at once: MLflow retries opening one for
    minutes (create_sqlalchemy_engine_with_retry) before it gives up."""
    import sqlite3

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("pragma schema_version")
    except sqlite3.Error as e:
        raise OSError(f"cannot open the MLflow store {path} ({e})") from None


def _experiment(client: Any, name: str, uri: str, run_dir: Path) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:") and "MLFLOW_TRACKING_URI" not in os.environ:
        location = (Path(run_dir).expanduser().resolve().parent / LOCAL_ARTIFACTS).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # made meanwhile by another run
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _limited(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _saved_run(run_dir: Path) -> dict[str, str] | None:
    """RUN/tracking.json's MLflow run, or None (a damaged file starts a new MLflow run)."""
    path = Path(run_dir) / TRACKING_FILE
    try:
        found = json.loads(path.read_text(encoding="utf-8"))["mlflow"]
        if all(isinstance(found.get(k), str) and found[k]
               for k in ("tracking_uri", "experiment_id", "run_id")):
            return found
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    warn(f"{path} does not say which MLflow run this run sent to; a new MLflow run starts.")
    return None


# --- after evaluate ------------------------------------------------------------------------

def track_evaluation(run_dir: Path, trackers: Sequence[str], evaluation: Any,
                     report_dir: Path, epochs_done: int) -> None:
    """The report of `evaluate` to the run's trackers: figures and the per-class table to
    TensorBoard (a file of its own in RUN/tensorboard/, replaced by the next evaluation of
    the same report), the report folder and its accuracy to the run's MLflow run. What is
    sent is what the evaluation names: its `tracked_scores()` (accuracy, and a multi-label
    model's F1 and mean average precision), its report's `FIGURES`, its `per_class()` rows."""
    report_dir = Path(report_dir)
    step = max(epochs_done - 1, 0)
    if "tensorboard" in trackers:
        try:
            _evaluation_events(run_dir, evaluation, report_dir, step)
        except Exception as e:
            warn(_failure("TensorBoard", e))
    saved = _saved_run(run_dir) if "mlflow" in trackers else None
    if saved is not None:
        try:
            from mlflow import MlflowClient
            from mlflow.entities import Metric

            with _patient_enough():
                client = MlflowClient(tracking_uri=saved["tracking_uri"])
                now = int(time.time() * 1000)
                prefix = _tag_prefix(report_dir)
                metrics = [Metric(f"{prefix}{name}", value, now, step)
                           for name, value in evaluation.tracked_scores().items()]
                client.log_batch(saved["run_id"], metrics=metrics)
                client.log_artifacts(saved["run_id"], str(report_dir), report_dir.name)
        except Exception as e:
            warn(_failure("MLflow", e))


def _tag_prefix(report_dir: Path) -> str:
    """'evaluation/' for RUN/report, 'evaluation-NAME/' for RUN/report-NAME."""
    name = fileio.shown_name(report_dir.name)
    return "evaluation" + name[len("report"):] + "/" if name.startswith("report") \
        else f"evaluation-{name}/"


def _evaluation_events(run_dir: Path, evaluation: Any, report_dir: Path, step: int) -> None:
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from torch.utils.tensorboard import summary

    prefix = _tag_prefix(report_dir)
    now = time.time()
    events = [Event(wall_time=now, file_version="brain.Event:2")]

    def add(part: Any) -> None:
        events.append(Event(wall_time=now, step=step, summary=part))

    for name, value in evaluation.tracked_scores().items():
        add(summary.scalar(f"{prefix}{name}", value))
    for png in evaluation.FIGURES:
        path = report_dir / png
        if path.is_file():
            from PIL import Image

            data = path.read_bytes()
            with Image.open(path) as image:
                width, height = image.size
            add(Summary(value=[Summary.Value(tag=prefix + png[:-4], image=Summary.Image(
                height=height, width=width, colorspace=4, encoded_image_string=data))]))
    table = evaluation.per_class()
    # A multi-label model's rows: per label, with its average precision; a figure no photo
    # defines (a label on none of them) as "undefined".
    multi = bool(table) and "average_precision" in table[0]
    keys = ("precision", "recall", "f1", "average_precision") if multi else \
        ("precision", "recall", "f1")
    rows = [f"| {'label' if multi else 'class'} | precision | recall | F1 | "
            + ("AP | " if multi else "") + "photos |",
            "| --- | --- | --- | --- | " + ("--- | " if multi else "") + "--- |"]
    for row in table:
        name = _markdown_cell(str(row["name"]))
        figures = " | ".join("undefined" if row[key] is None else f"{row[key]:.3f}"
                             for key in keys)
        rows.append(f"| {name} | {figures} | {row['support']} |")
    add(summary.text(f"{prefix}per_class", "\n".join(rows)))
    folder = Path(run_dir) / TENSORBOARD_DIR
    folder.mkdir(exist_ok=True)
    # One file per report, replaced whole: evaluating again does not add a second copy.
    ending = f".{prefix[:-1]}.clearclass"
    target = folder / f"events.out.tfevents.{int(now):010d}{ending}"

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            _write_events(f, events)

    fileio.atomic_write(target, write)
    for old in folder.iterdir():
        if old.name.endswith(ending) and old.name.startswith("events.") and old != target:
            old.unlink(missing_ok=True)


def _markdown_cell(text: str) -> str:
    """A class name in a Markdown table cell: its bars and line breaks cannot end the cell,
    and TensorBoard's text plugin shows markup as text."""
    return (fileio.shown_name(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
            .replace("<", "&lt;").replace(">", "&gt;"))
