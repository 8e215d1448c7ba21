"""The training loop: fastai's `fine_tune`, written out to be read top to bottom.

1. find the photos and decode each once (unreadable files are listed in skipped.csv);
2. build the model with a new head and move it to the device, channels_last;
3. with the pretrained body frozen, train the head one-cycle for `freeze_epochs`; then
   unfreeze and train everything one-cycle for `epochs`, the body `body_slowdown` times
   slower. Unless `adapt_batchnorm`, the body keeps its pretrained BatchNorm statistics:
   the frozen body then runs forward only, and unfrozen batches can be split into chunks
   that give the same gradient with a fraction of the memory;
4. after every epoch, show the metrics row and save it with the model bundle and a
   checkpoint (`checkpoint.py`), and save a checkpoint every `checkpoint_minutes` inside an
   epoch, so that `resume` continues a run from where it stopped, with the same result.

The run folder changes as a unit (`fileio.FolderChange`): until the first checkpoint is
saved the run is written beside it, and each epoch's metrics, model and checkpoint are
swapped in together. Whenever the process dies, RUN holds the previous complete state or
the next one; with `overwrite`, the previous run stays until the new one has saved.

Under torchrun each process trains on its share of every batch (`distributed.py`); the
process of rank 0 alone prints and writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clearclass import device as devices
from clearclass import fileio
from clearclass.bundle import ModelInfo, save_bundle
from clearclass.data.augment import AugmentSettings, augment_settings, batch_augment, normalize
from clearclass.data.budget import check_cache_room
from clearclass.data.cache import default_cache_dir
from clearclass.data.loader import PhotoBatches, decode_photos, take
from clearclass.data.sources import (
    SPLIT_CHECKSUM,
    PhotoSet,
    find_photos,
    read_split,
    split_checksum,
)
from clearclass.errors import RunError, SettingError
from clearclass.export import export_onnx
from clearclass.model import (
    Pretrained,
    body_and_head,
    create_model,
    feature_stages,
    fix_early_stages,
    forward_fixed_body,
    set_body_trainable,
    set_train_mode,
    stages_finer_than,
)
from clearclass.parallel import StopBetweenSteps, check_process_count, default_workers
from clearclass.progress import LiveTable, bar, quiet, say, warn
from clearclass.training import distributed
from clearclass.training.checkpoint import (
    CHECKPOINT_DIR,
    Checkpoint,
    Position,
    read_checkpoint,
    write_checkpoint,
)
from clearclass.training.config import RESUME_SETTINGS, TrainConfig, make_config
from clearclass.training.depthwise import faster_depthwise_gradients
from clearclass.training.distributed import Processes
from clearclass.training.forward_only import forward_only
from clearclass.training.run_folder import resuming, run_dir_for, run_folder, run_path

METRICS_HEADER = ("epoch", "train_loss", "valid_loss", "accuracy", "time", "stage")
METRICS_WIDTHS = (6, 11, 11, 9, 6, 8)  # characters of each column of the epoch table
MIN_STEPS_PER_EPOCH = 8  # below this, warn: one-cycle warm-up and cool-down leave no training
SYNC_EVERY = 10  # steps between reading the loss back from the device
# By default the unfrozen body keeps its stages at this stride or finer as pretrained.
FROZEN_STRIDE = 8
# The unfrozen stage's share of steps with a rising learning rate (fastai's fine_tune).
UNFROZEN_WARMUP = 0.3


@dataclass
class EpochRow:
    epoch: int
    train_loss: float
    valid_loss: float
    accuracy: float
    seconds: float
    stage: str  # "frozen" or "unfrozen"

    def cells(self) -> tuple:
        return (self.epoch, f"{self.train_loss:.6f}", f"{self.valid_loss:.6f}",
                f"{self.accuracy:.6f}", _mmss(self.seconds), self.stage)


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
    history: list[EpochRow] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    # The run's first state, written beside run_dir until the first epoch is saved.
    staging: fileio.FolderChange | None = field(default=None, repr=False, compare=False)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12], repr=False)
    processes: Processes = field(default_factory=Processes, repr=False, compare=False)
    # Where the last checkpoint saved in run_dir stands (None: none saved by this process).
    saved: Position | None = field(default=None, repr=False, compare=False)

    @property
    def files_dir(self) -> Path:
        """Where the run's files are written now: run_dir, or its staging folder."""
        return self.staging.path if self.staging is not None else self.run_dir

    @property
    def model_dir(self) -> Path:
        return self.run_dir / "model"

    @property
    def resume_command(self) -> str:
        import shlex

        return f"clearclass train --resume {shlex.quote(str(self.run_dir))}"

    def holds(self) -> str:
        """What the run folder holds now, in words, for messages after an interruption."""
        saved, done = self.saved, len(self.history)
        model = f"the model as of epoch {done - 1}" if done else "no finished epoch"
        if saved is not None and saved.step:
            return (f"{self.run_dir} holds a checkpoint at epoch {saved.epochs_done}, batch "
                    f"{saved.step} ({model})")
        if done:
            return f"{self.run_dir} holds {model} and its checkpoint"
        if self.run_dir.exists():
            return f"no epoch had finished; {self.run_dir} still holds the previous run"
        return "no epoch had finished, so nothing was saved"

    @property
    def accuracy(self) -> float:
        """Validation accuracy after the last epoch."""
        return self.history[-1].accuracy if self.history else float("nan")

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
        """The epoch table (`epoch, train_loss, valid_loss, accuracy, time, stage`)."""
        table = LiveTable(METRICS_HEADER, METRICS_WIDTHS, live=False)
        for row in self.history:
            table.add_row(row.cells())
        return table

    def __repr__(self) -> str:
        return (f"TrainingRun({str(self.run_dir)!r}, {self.config.model}, "
                f"{len(self.history)} epoch(s), accuracy {self.accuracy:.2%})")

    def _repr_html_(self) -> str:
        import html

        return (f"<p>Run <code>{html.escape(str(self.run_dir))}</code>: "
                f"{html.escape(self.config.model)}, validation accuracy "
                f"<b>{self.accuracy:.2%}</b>.</p>" + self.epoch_table()._repr_html_())


@dataclass
class _Session:
    """What every step of training needs, passed around as one object."""

    model: nn.Module
    compute: devices.Compute
    train_batches: PhotoBatches
    valid_batches: PhotoBatches
    augment: AugmentSettings | None
    augment_gen: torch.Generator
    info: ModelInfo
    run: TrainingRun
    table: LiveTable | None = None  # the epoch table, shown as rows arrive
    scaler: torch.amp.GradScaler | None = None
    body_fixed: bool = False  # frozen body run forward only (BatchNorm not adapting)
    adapt_batchnorm: bool = True  # BatchNorm layers normalise with batch statistics
    micro_batch: int | None = None  # forward/backward in chunks this size (same gradient)
    frozen_stages: int = 0  # --frozen-stages, resolved for the model
    fixed_modules: tuple[str, ...] = ()  # early stages that keep their pretrained weights
    warmup_steps: int = 0  # the unfrozen stage's first steps, on photos of --warmup-size
    # The fixed body's features, computed faster (training/forward_only.py).
    fast_body: Callable[[torch.Tensor], torch.Tensor] | None = None
    # What a training step calls: the model, or its head on the fixed body; wrapped in
    # DistributedDataParallel under torchrun.
    forward: nn.Module | None = None
    checkpoint: Checkpoint | None = None  # the one this run resumes from
    # The stage being trained, its optimizer and schedule (what a checkpoint saves).
    stage: str | None = None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    stop: _StopRequest | None = None
    last_save: float = field(default_factory=time.monotonic)  # of the last checkpoint

    @property
    def processes(self) -> Processes:
        return self.run.processes


def train(data: str | Path | TrainConfig, **settings: Any) -> TrainingRun:
    """Fine-tune a pretrained model on labelled photos, as fastai's `fine_tune` does.

    `data` is a folder of class folders, a folder with train/ and valid/, a CSV file of
    path,label[,is_valid], or a `TrainConfig`. `settings` are the fields of `TrainConfig`
    (the options of `clearclass train`, with `_` for `-`); given beside a config, they
    override it. Shows the epoch table as it goes (under the cell in a notebook).

    Example:
        run = clearclass.train("photos/", model="efficientnet_lite0", epochs=3,
                               out="runs/dogs", overwrite=True)
        print(f"{run.accuracy:.1%}")
    """
    config = make_config(data, settings)
    started = time.perf_counter()
    processes = distributed.from_environment()
    if not processes.main:  # the others only compute; process 0 prints and writes
        with quiet():
            return _fine_tune(TrainingRun(run_dir_for(config), config, processes=processes),
                              started)
    with run_folder(config) as (run_dir, staging):
        return _fine_tune(TrainingRun(run_dir, config, staging=staging, processes=processes),
                          started)


def resume(run: str | Path, **settings: Any) -> TrainingRun:
    """Continue a run that was stopped (Ctrl-C, a crash, a killed process) from its checkpoint.

    The run goes on with its own settings (RUN/config.json) and ends as the uninterrupted
    run would have. `settings` may change only how it runs: device, precision, workers,
    cache, checkpoint_minutes, onnx. A finished run is returned as it is.

    Example:
        run = clearclass.resume("runs/dogs")
        print(run.accuracy)
    """
    started = time.perf_counter()
    run_dir = run_path(run)
    config = _resumed_config(run_dir, settings)
    processes = distributed.from_environment()
    with contextlib.ExitStack() as stack:
        if processes.main:
            stack.enter_context(resuming(run_dir))
        else:
            stack.enter_context(quiet())
        checkpoint = read_checkpoint(run_dir)
        previous = _read_history(run_dir)
        if checkpoint is None:
            return _finished_run(run_dir, config, previous, processes)
        training = TrainingRun(run_dir, config, run_id=checkpoint.run_id, processes=processes,
                               saved=checkpoint.position)
        training.history = previous[:checkpoint.position.epochs_done]
        say(f"Resuming {run_dir} at epoch {checkpoint.position.epochs_done}, batch "
            f"{checkpoint.position.step}.")
        return _fine_tune(training, started, checkpoint)


def _resumed_config(run_dir: Path, settings: dict[str, Any]) -> TrainConfig:
    config_file = fileio.settled(run_dir) / "config.json"
    if not fileio.settled(run_dir).exists():
        raise RunError(f"{run_dir} does not exist. A run that stops before its first "
                       "checkpoint (the end of its first epoch, or --checkpoint-minutes into "
                       "it) leaves nothing to resume: start it again.")
    if not config_file.is_file():
        raise RunError(f"{run_dir} is not a training run (no config.json); give the folder "
                       "that `clearclass train` wrote.")
    for name in settings:
        if name not in RESUME_SETTINGS:
            raise RunError(f"A resumed run keeps its own settings ({run_dir}/config.json); "
                           f"{name} cannot change. To train with other settings, start a "
                           "new run.")
    try:
        saved = TrainConfig.from_dict(json.loads(config_file.read_text(encoding="utf-8"))
                                      ["config"])
    except SettingError as e:  # a value of the wrong kind, named
        raise RunError(f"{config_file} is damaged ({str(e).rstrip('.')}); the run cannot be "
                       "resumed.") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise RunError(f"{config_file} is damaged ({type(e).__name__}: {e}); the run cannot "
                       "be resumed.") from None
    return make_config(saved, settings)


def _read_history(run_dir: Path) -> list[EpochRow]:
    import csv

    path = fileio.settled(run_dir) / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [EpochRow(int(r["epoch"]), float(r["train_loss"]), float(r["valid_loss"]),
                         float(r["accuracy"]), _seconds(r["time"]), r["stage"])
                for r in csv.DictReader(f)]


def _finished_run(run_dir: Path, config: TrainConfig, history: list[EpochRow],
                  processes: Processes) -> TrainingRun:
    total = config.freeze_epochs + config.epochs
    if len(history) < total:
        raise RunError(
            f"{run_dir} has no checkpoint to resume from: it holds {len(history)} of {total} "
            "epochs, saved by a clearclass older than checkpoints, or stopped before its "
            "first save. Train again with --overwrite.")
    run = TrainingRun(run_dir, config, history=history, processes=processes)
    if processes.main and config.onnx and not (run.model_dir / "model.onnx").exists():
        _export_onnx(run)  # a run killed between its last epoch and the export
    say(f"{run_dir} finished all {total} epochs; nothing to resume (validation accuracy "
        f"{run.accuracy:.2%}).")
    return run


def _fine_tune(run: TrainingRun, started: float,
               checkpoint: Checkpoint | None = None) -> TrainingRun:
    config = run.config
    try:
        session = prepare(config, run, checkpoint)
        if run.processes.main:
            session.table = LiveTable(METRICS_HEADER, METRICS_WIDTHS)
            for row in run.history:
                session.table.add_row(row.cells())
        steps = len(session.train_batches)
        if steps < MIN_STEPS_PER_EPOCH:
            warn(f"Only {steps} training step(s) per epoch (batches of {config.batch_size}): "
                 "a one-cycle schedule that short barely moves the weights. Use a smaller "
                 "batch size or more epochs.")
        with _StopRequest(tell=run.processes.main,
                          under_torchrun=run.processes.distributed) as session.stop:
            _fit_stages(session, config, checkpoint.position if checkpoint else Position())
    except KeyboardInterrupt:
        if run.processes.main:
            if run.saved is not None:
                warn(f"Training stopped; {run.holds()}. Continue with: {run.resume_command}")
            else:
                warn(f"Training interrupted; {run.holds()}.")
        raise
    finally:
        distributed.stop()

    if run.processes.main:
        t0 = time.perf_counter()
        _export_onnx(run)
        run.timings["onnx_export_seconds"] = time.perf_counter() - t0
        run.timings["total_seconds"] = time.perf_counter() - started
        _write_summary(run)
        say(f"Validation accuracy {run.accuracy:.2%}. Model saved in {run.model_dir}.")
    return run


def _fit_stages(session: _Session, config: TrainConfig, start: Position) -> None:
    """fastai's fine_tune: frozen body first, then everything, the body learning
    body_slowdown times slower. A resumed run skips what its checkpoint had done."""
    model = session.model
    first_unfrozen = config.freeze_epochs
    if config.freeze_epochs and start.epochs_done < first_unfrozen:
        freeze_body(session, config)
        # fastai's `slice(base_lr)`: norm layers at a tenth. The head learns faster than
        # fastai's because it is one zero-initialised linear layer on raw features where
        # fastai's normalises them first (measured: benchmarks/README.md).
        rates = (config.learning_rate / 10, config.learning_rate * config.head_speedup)
        fit_one_cycle(session, config.freeze_epochs, rates, "frozen", pct_start=0.99,
                      div=25.0, first_epoch=0, start=start)
    if config.epochs:
        set_body_trainable(model, True)
        session.fixed_modules = tuple(fix_early_stages(model, session.frozen_stages))
        session.body_fixed, session.forward, session.fast_body = False, None, None
        session.adapt_batchnorm = config.will_adapt_batchnorm
        session.micro_batch = _micro_batch(config, session.compute)
        if config.warmup_size:
            session.warmup_steps = round(
                UNFROZEN_WARMUP * config.epochs * len(session.train_batches))
        top = config.learning_rate / 2
        on_cpu = session.compute.device.type == "cpu"
        with faster_depthwise_gradients(model) if on_cpu else contextlib.nullcontext():
            fit_one_cycle(session, config.epochs, (top / config.body_slowdown, top),
                          "unfrozen", pct_start=UNFROZEN_WARMUP, div=5.0,
                          first_epoch=first_unfrozen, start=start)


def prepare(config: TrainConfig, run: TrainingRun,
            checkpoint: Checkpoint | None = None) -> _Session:
    """Photos found, split and decoded once; the model built on its device.

    Resuming from `checkpoint`: the photos of the run's split.csv, the checkpoint's weights.
    """
    run_dir = run.files_dir
    processes = run.processes
    if config.batch_size % processes.world_size:
        raise SettingError("batch_size", f"is the photos of one step across all "
                           f"{processes.world_size} processes, so it must divide among them; "
                           f"got {config.batch_size}.")
    _seed_everything(config.seed)
    compute = devices.select(distributed.device_for(config.device, processes),
                             config.precision)
    distributed.start(processes, compute.device)
    if compute.device.type == "cpu":
        # Halves the step time on the CPU; the process then keeps its peak memory until it
        # exits (device.keep_freed_memory says why).
        devices.keep_freed_memory()

    if checkpoint is None:
        photo_set = find_photos(config.data, config.validation_fraction, config.seed)
    else:
        photo_set = read_split(run.run_dir, checkpoint.info.class_ids)
    for note in photo_set.notes:
        say(note)
    listed = len(photo_set.photos)
    t0 = time.perf_counter()
    workers = _workers_per_process(config, processes)
    photo_set, pixels = _decode(photo_set, config, run_dir, processes, workers,
                                write_skipped=checkpoint is None and processes.main)
    run.timings["decode_seconds"] = time.perf_counter() - t0
    if checkpoint is not None and len(photo_set.photos) != listed:
        raise RunError(f"Some photos of {run.run_dir}/split.csv can no longer be read (see "
                       "the warning above); a resumed run needs the same photos. Restore them, "
                       "or train again.")
    if checkpoint is None and processes.main:
        _write_split(photo_set, run_dir)
    class_index = {c: i for i, c in enumerate(photo_set.class_ids)}
    train_idx = [i for i, p in enumerate(photo_set.photos) if not p.is_valid]
    valid_idx = [i for i, p in enumerate(photo_set.photos) if p.is_valid]
    say(f"{len(photo_set.class_ids)} classes, {len(train_idx)} training and {len(valid_idx)} "
        f"validation photos ({photo_set.layout}).")

    torch.manual_seed(config.seed)
    if checkpoint is None:
        model, pretrained = create_model(config.model, len(photo_set.class_ids),
                                         pretrained=config.pretrained, weights=config.weights)
        info = _model_info(config, photo_set, pretrained, run.run_id)
        origin = pretrained.describe()
    else:
        model, _ = create_model(config.model, len(photo_set.class_ids), pretrained=False)
        checkpoint.load_model(model)
        info, origin = checkpoint.info, "its checkpoint"
    model = model.to(compute.device, memory_format=torch.channels_last)
    fixed_stages = frozen_stages(config, model)
    where = compute.describe()
    if processes.distributed:
        where = f"{processes.world_size} processes, each on {where}"
    kept = ""
    if fixed_stages and config.epochs:
        kept = (f" Once unfrozen, its first {fixed_stages} feature stage(s) keep their "
                "pretrained weights (--frozen-stages).")
    say(f"Model {config.model} from {origin}; training on {where}.{kept}")
    if checkpoint is None and processes.main:
        _write_config(run_dir, config, pretrained, compute, run.run_id)

    def batches(indices: list[int], training: bool) -> PhotoBatches:
        # Each process takes its share of every batch: --batch-size stays the photos of one
        # step, whatever the number of processes, and so does the learning rate.
        return PhotoBatches(take(pixels, indices),
                            [class_index[photo_set.photos[i].label] for i in indices],
                            config.item_resize, config.resize_method,
                            config.batch_size // processes.world_size,
                            training=training, seed=config.seed,
                            pin_memory=compute.device.type == "cuda", workers=workers,
                            shard=(processes.rank, processes.world_size))

    return _Session(
        model=model, compute=compute,
        train_batches=batches(train_idx, True), valid_batches=batches(valid_idx, False),
        augment=augment_settings(config.batch_augment, config.augment_strength),
        augment_gen=torch.Generator().manual_seed(config.seed),
        info=info, run=run, checkpoint=checkpoint, frozen_stages=fixed_stages,
        scaler=torch.amp.GradScaler(compute.device.type) if compute.needs_grad_scaler else None,
    )


def training_step(session: _Session, images: torch.Tensor, labels: torch.Tensor,
                  optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """Augment, forward, backward and step on one batch; returns the loss (on the device)."""
    compute, info = session.compute, session.info
    images = images.to(compute.device, non_blocking=True)
    labels = labels.to(compute.device, non_blocking=True)
    if session.augment is not None:
        images = batch_augment(images, session.augment, session.augment_gen)
    # The scheduler counts the stage's steps, so a resumed run resizes the same ones.
    if session.scheduler is not None and session.scheduler.last_epoch < session.warmup_steps:
        images = resized(images, session.run.config.warmup_size)
    x = normalize(images, info.mean, info.std)
    forward = session.forward or _forward_module(session)
    chunk = session.micro_batch or len(labels)
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=compute.device)
    # In chunks, activations for back-propagation are held for one chunk at a time. With
    # BatchNorm statistics fixed, a photo's output does not depend on its batch, so the
    # summed gradient is the whole batch's. Under DDP, gradients are averaged across
    # processes once, after the last chunk.
    chunks = list(zip(x.split(chunk), labels.split(chunk)))
    for k, (xs, ys) in enumerate(chunks):
        last = k == len(chunks) - 1
        no_sync = getattr(forward, "no_sync", None)
        with (no_sync() if no_sync and not last else contextlib.nullcontext()):
            with compute.autocast:
                loss = F.cross_entropy(forward(xs), ys) * (len(ys) / len(labels))
            if session.scaler is not None:
                session.scaler.scale(loss).backward()
            else:
                loss.backward()
        total += loss.detach()
    if session.scaler is not None:
        session.scaler.step(optimizer)
        session.scaler.update()
    else:
        optimizer.step()
    return total


def resized(images: torch.Tensor, size: int) -> torch.Tensor:
    """A batch (uint8, or floats in [0, 1]) resized to `size` pixels on its longer side,
    as floats in [0, 1], antialiased as a photo decoded at that size would be."""
    x = images.float().div_(255.0) if images.dtype == torch.uint8 else images
    height, width = x.shape[-2:]
    scale = size / max(height, width)
    return F.interpolate(x, size=(round(height * scale), round(width * scale)),
                         mode="bilinear", antialias=True, align_corners=False)


def freeze_body(session: _Session, config: TrainConfig) -> None:
    """Only the head learns; unless BatchNorm statistics adapt, the body runs forward only."""
    set_body_trainable(session.model, False, adapt_batchnorm=config.will_adapt_batchnorm)
    session.body_fixed = not config.will_adapt_batchnorm
    session.forward = None  # rebuilt for the parameters that now learn
    # The fixed body's features, sooner: BatchNorm folded, in ONNX Runtime where it pays.
    session.fast_body = forward_only(
        session.model, True, _example(session), len(session.train_batches),
        session.compute.dtype) if session.body_fixed else None


def _example(session: _Session) -> torch.Tensor:
    """A batch shaped as training's, for exporting the model."""
    size = session.run.config.item_resize
    return torch.randn(2, 3, size, size, device=session.compute.device).contiguous(
        memory_format=torch.channels_last)


def frozen_stages(config: TrainConfig, model: nn.Module) -> int:
    """--frozen-stages resolved for `model`: by default, with pretrained weights, the
    stages at 1/8 of the photo's side or finer, whose back-propagation costs the most for
    the least change (benchmarks/TECHNIQUES.md); from random weights, none."""
    stages = len(feature_stages(model))
    if config.frozen_stages is None:
        pretrained = config.pretrained or config.weights
        return stages_finer_than(model, FROZEN_STRIDE) if pretrained else 0
    if config.frozen_stages > stages:
        raise SettingError("frozen_stages", f"is more than the {stages} feature stages "
                           f"{config.model} has; got {config.frozen_stages}.")
    return config.frozen_stages


class _HeadOnFixedBody(nn.Module):
    """The model with its body run forward only, so DDP sees (and syncs) the head alone."""

    def __init__(self, model: nn.Module,
                 features: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        self.model = model
        # Not a submodule: DDP should neither sync nor broadcast the forward-only copy.
        self.__dict__["features"] = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return forward_fixed_body(self.model, x, self.features)


def _forward_module(session: _Session) -> nn.Module:
    """What a step calls for this stage; wrapped in DDP when training in several processes.

    Built anew for each stage: DDP syncs the parameters that learn when it is built.
    """
    module = (_HeadOnFixedBody(session.model, session.fast_body) if session.body_fixed
              else session.model)
    if session.processes.distributed:
        from torch.nn.parallel import DistributedDataParallel

        device = session.compute.device
        module = DistributedDataParallel(
            module, device_ids=[device] if device.type == "cuda" else None)
    session.forward = module
    return module


def fit_one_cycle(session: _Session, epochs: int, rates: tuple[float, float], stage: str,
                  pct_start: float, div: float, first_epoch: int = 0,
                  start: Position | None = None) -> None:
    """Train `epochs` epochs with one-cycle learning rates and momentum, AdamW.

    `rates`: peak learning rates of the body and of the head. The stage's epochs are
    numbered from `first_epoch`; `start` (a resumed run's position) skips what was done.
    """
    start = start or Position()
    groups = [[p for p in g if p.requires_grad] for g in body_and_head(session.model)]
    param_groups = [{"params": g, "lr": rate} for g, rate in zip(groups, rates) if g]
    peaks = [rate for g, rate in zip(groups, rates) if g]
    optimizer = torch.optim.AdamW(param_groups, betas=(0.9, 0.99), eps=1e-5,
                                  weight_decay=session.run.config.weight_decay)
    steps = epochs * len(session.train_batches)
    # fastai's schedule: warm up from lr/div, cosine down to lr/1e5; beta1 0.95-0.85-0.95.
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=peaks, total_steps=steps, pct_start=pct_start,
        div_factor=div, final_div_factor=1e5 / div, base_momentum=0.85, max_momentum=0.95)
    saved = session.checkpoint
    if saved is not None and saved.stage == stage and (start.epochs_done > first_epoch
                                                       or start.step > 0):
        saved.load_optimizer(optimizer)
        saved.load_scheduler(scheduler)
        saved.load_scaler(session.scaler)
    session.optimizer, session.scheduler, session.stage = optimizer, scheduler, stage
    last_epoch = session.run.config.freeze_epochs + session.run.config.epochs - 1
    for epoch in range(max(first_epoch, start.epochs_done), first_epoch + epochs):
        position = start if epoch == start.epochs_done else Position(epoch)
        t0 = time.perf_counter()
        train_loss = train_one_epoch(session, optimizer, scheduler, epoch, stage, position)
        logits = _validation_logits(session)
        valid_loss, accuracy = evaluate(logits, session.valid_batches, session.compute,
                                        session.info.mean, session.info.std,
                                        session.processes)
        seconds = position.seconds + time.perf_counter() - t0
        row = EpochRow(epoch, train_loss, valid_loss, accuracy, seconds, stage)
        finished = epoch == last_epoch
        _record(session, row, finished)
        if not finished and session.stop is not None and session.stop.requested(
                session.processes)[0]:
            raise KeyboardInterrupt  # the checkpoint of this epoch's end is saved


def _validation_logits(session: _Session) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's logits for validation: the same outputs, sooner."""
    model = session.model
    if session.fast_body is not None:  # the frozen body, already running fast: reuse it
        model.eval()  # the head's dropout off; the next epoch sets the training mode again

        def head_on_fast_body(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return forward_fixed_body(model, x, session.fast_body)

        return head_on_fast_body
    # BatchNorm folded, in ONNX Runtime where it pays.
    return forward_only(model, False, _example(session), len(session.valid_batches),
                        session.compute.dtype)


def train_one_epoch(session: _Session, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, epoch: int,
                    stage: str, start: Position | None = None) -> float:
    """One pass over the training photos (from `start.step` when resuming); returns the mean
    training loss, over every process.

    The loss is summed on the device and read back only every few steps, so that a GPU
    is not made to wait for the CPU after every batch. Every `checkpoint_minutes`, and when
    asked to stop (Ctrl-C, SIGTERM), a checkpoint is saved between two steps.
    """
    start = start or Position(epoch)
    config, processes = session.run.config, session.processes
    set_train_mode(session.model, body_fixed=session.body_fixed,
                   adapt_batchnorm=session.adapt_batchnorm, fixed=session.fixed_modules)
    session.train_batches.set_epoch(epoch, start.step)
    device = session.compute.device
    # A checkpoint holds the loss summed over every process; process 0 carries it on.
    carried = processes.main
    total = torch.tensor(start.loss_sum if carried else 0.0, dtype=torch.float32,
                         device=device)
    count = start.count if carried else 0
    waited, steps = 0.0, len(session.train_batches)
    started = time.perf_counter()
    every = config.checkpoint_minutes * 60
    with bar(f"epoch {epoch} ({stage})", steps) as progress:
        progress.advance(start.step)
        t0 = time.perf_counter()
        for step, (images, labels) in enumerate(session.train_batches, start=start.step):
            waited += time.perf_counter() - t0  # the device had nothing to do meanwhile
            _seed_step(session, epoch, step)
            loss = training_step(session, images, labels, optimizer)
            scheduler.step()
            total += loss * len(labels)
            count += len(labels)
            progress.advance()
            synced = step % SYNC_EVERY == SYNC_EVERY - 1 or step == steps - 1
            if synced:
                mean = total.item() / count
                _check_finite(mean, epoch)
                progress.set_info(f"loss {mean:.4f}")
            # Between steps, where the weights and the optimizer agree. Under DDP every
            # process must decide alike, so they agree only at sync points.
            if step < steps - 1 and (synced or not processes.distributed):
                due = every > 0 and time.monotonic() - session.last_save >= every
                if session.stop is not None:
                    stop, due = session.stop.requested(processes, due)
                else:
                    stop = False
                if due or stop:
                    loss_sum, photos = distributed.sum_all(torch.stack([
                        total.double(), torch.tensor(float(count), dtype=torch.float64,
                                                     device=device)]), processes).tolist()
                    here = Position(epoch, step + 1, loss_sum, int(photos),
                                    start.seconds + time.perf_counter() - started)
                    _save_checkpoint(session, here, after_stop=stop)
                if stop:
                    raise KeyboardInterrupt
            t0 = time.perf_counter()
    sums = distributed.sum_all(torch.stack([total.double(), torch.tensor(
        float(count), dtype=torch.float64, device=device)]), processes)
    mean = (sums[0] / sums[1].clamp(min=1)).item()
    session.run.timings[f"epoch_{epoch}_train_seconds"] = time.perf_counter() - started
    session.run.timings[f"epoch_{epoch}_data_wait_seconds"] = waited
    return mean


def _seed_step(session: _Session, epoch: int, step: int) -> None:
    """Seed the step's random draws (augmentation, dropout) from where it is, so that a
    resumed run draws what the uninterrupted one did, and each process its own."""
    seed = ((session.run.config.seed * 1_000_003 + session.processes.rank) * 1_000_033
            + epoch) * 1_000_037 + step
    seed %= 2**63
    session.augment_gen.manual_seed(seed)
    torch.manual_seed(seed)


class _StopRequest(StopBetweenSteps):
    """Ctrl-C (SIGINT) and SIGTERM ask training to stop at the next step, after saving a
    checkpoint; a second Ctrl-C stops at once, but not under torchrun: it passes the user's
    Ctrl-C on to every process (a second signal to each), then waits 30 s before it kills
    them."""

    def __init__(self, tell: bool = True, under_torchrun: bool = False) -> None:
        super().__init__(second_stops=not under_torchrun)
        self.tell = tell  # this process prints (process 0)

    def first_asked(self) -> None:
        if self.tell:
            warn("Stopping after this step, once a checkpoint is saved (Ctrl-C again to "
                 "stop at once, without saving)...")

    def requested(self, processes: Processes, due: bool = False) -> tuple[bool, bool]:
        """(stop, due): whether to stop, and whether a checkpoint is `due`, each set when
        set in any process (under DDP every process must call this at the same step)."""
        if not processes.distributed:
            return self.asked, due
        flags = torch.tensor([float(self.asked), float(due)])
        if torch.distributed.get_backend() == "nccl":
            flags = flags.cuda()
        stop, due = distributed.any_process(flags, processes).tolist()
        self.asked = bool(stop)
        return self.asked, bool(due)


def _check_finite(loss: float, epoch: int) -> None:
    if not math.isfinite(loss):
        raise RunError(
            f"The training loss became {loss} at epoch {epoch}: the learning rate is too "
            "high for this model and data. Lower the learning rate (--learning-rate; "
            "`clearclass lr-find` suggests one)."
        )


@torch.no_grad()
def evaluate(model: Callable[[torch.Tensor], torch.Tensor], batches: PhotoBatches,
             compute: devices.Compute, mean: tuple, std: tuple,
             processes: Processes | None = None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over the validation photos (each process measures its
    share; the sums are added up across processes). `model`: the network, or a function
    that gives its logits (`forward_only`)."""
    if isinstance(model, nn.Module):
        model.eval()
    total_loss = torch.zeros((), device=compute.device)
    correct = torch.zeros((), device=compute.device, dtype=torch.long)
    count = 0
    for images, labels in batches:
        x = normalize(images.to(compute.device, non_blocking=True), mean, std)
        labels = labels.to(compute.device, non_blocking=True)
        with compute.autocast:
            logits = model(x)
        total_loss += F.cross_entropy(logits.float(), labels, reduction="sum")
        correct += (logits.argmax(1) == labels).sum()
        count += len(labels)
    sums = torch.stack([total_loss.double(), correct.double(),
                        torch.tensor(float(count), dtype=torch.float64, device=compute.device)])
    total, right, count = distributed.sum_all(sums, processes or Processes()).tolist()
    if not count:  # nothing was measured; 0% would read as a result
        return math.nan, math.nan
    return total / count, right / count


def _record(session: _Session, row: EpochRow, finished: bool) -> None:
    """Show the epoch's row; save it, the model and the checkpoint (none once `finished`)
    into the run folder, as one change."""
    run = session.run
    session.last_save = time.monotonic()
    if session.table is not None:
        session.table.add_row(row.cells())
    if not run.processes.main:
        run.history.append(row)
        return
    rows = [*run.history, row]
    session.info.training.update(epochs_done=len(rows), valid_accuracy=row.accuracy,
                                 valid_loss=row.valid_loss)
    position = Position(row.epoch + 1)

    def write(folder: Path) -> None:
        fileio.write_csv(folder / "metrics.csv", METRICS_HEADER, [r.cells() for r in rows])
        save_bundle(session.model, session.info, folder / "model")
        if finished:  # the model is the whole result now; no need to keep 2-3x its size
            shutil.rmtree(folder / CHECKPOINT_DIR, ignore_errors=True)
        else:
            _write_checkpoint(session, folder, position)

    _change_run(session, write, f"epoch {row.epoch}")
    run.history.append(row)  # only once saved: history is what RUN holds
    run.saved = None if finished else position


def _save_checkpoint(session: _Session, position: Position, after_stop: bool) -> None:
    """A checkpoint inside an epoch (every checkpoint_minutes, or before stopping)."""
    session.last_save = time.monotonic()
    if not session.processes.main:
        return
    try:
        _change_run(session, lambda folder: _write_checkpoint(session, folder, position),
                    f"a checkpoint at epoch {position.epochs_done}, batch {position.step}")
    except RunError as e:
        if after_stop:
            raise
        warn(f"{e} Training goes on; the next checkpoint is due in "
             f"{session.run.config.checkpoint_minutes:g} minutes.")
        return
    session.run.saved = position


def _write_checkpoint(session: _Session, folder: Path, position: Position) -> None:
    write_checkpoint(folder / CHECKPOINT_DIR, model=session.model, info=session.info,
                     run_id=session.run.run_id, position=position, stage=session.stage,
                     optimizer=session.optimizer, scheduler=session.scheduler,
                     scaler=session.scaler)


def _change_run(session: _Session, write: Callable[[Path], None], what: str) -> None:
    """Write the run folder's next state with `write` and swap it in whole (the first time,
    the staged run with it); a full disk keeps the previous state and says so."""
    run = session.run
    change = run.staging or fileio.FolderChange(run.run_dir)
    try:
        write(change.path)
        change.commit()
    except OSError as e:
        change.discard()
        raise RunError(f"Could not save {what} ({e.strerror or e}: "
                       f"{e.filename or run.run_dir}); {run.holds()}. Free some space (or fix "
                       "the folder's permissions), then "
                       + (f"continue with {run.resume_command}." if run.saved else
                          "train again.")) from e
    except BaseException:
        change.discard()
        raise
    finally:
        run.staging = None
    session.last_save = time.monotonic()


def _export_onnx(run: TrainingRun) -> None:
    """model.onnx beside the weights, so that prediction can run in ONNX Runtime."""
    if not run.config.onnx or not run.history:
        return
    try:
        export_onnx(run.model_dir)
    except Exception as e:  # the safetensors bundle is complete without it
        warn(f"Could not export {run.config.model} to ONNX ({type(e).__name__}: {e}); "
             "prediction will use PyTorch.")


def _micro_batch(config: TrainConfig, compute: devices.Compute) -> int | None:
    """Chunk size for the unfrozen stage: 16 photos on the CPU, where memory is short.

    Measured on efficientnet_lite0, batch 64, 224 px, 2 cores: a step takes 2.1 s whole
    (7.5 GB peak) and 2.2 s in chunks of 16 (2.6 GB peak). Chunks give the same gradient
    only when BatchNorm statistics are fixed (adapt_batchnorm off); GPUs keep whole batches.
    """
    if config.will_adapt_batchnorm or compute.device.type != "cpu":
        return None
    return 16 if config.batch_size > 16 else None


def _decode(photo_set: PhotoSet, config: TrainConfig, run_dir: Path, processes: Processes,
            workers: int | None, write_skipped: bool) -> tuple[PhotoSet, Sequence[np.ndarray]]:
    """Every photo checked (and, unless --cache off, decoded and kept) before training.

    Under torchrun with the disk cache, each process first decodes its share of the photos
    into the cache, so that no photo is decoded twice (nor written by two processes at once);
    then every process finds all of them there.
    """
    paths = [p.path for p in photo_set.photos]
    mode = config.cache
    cache = _usable_cache_dir() if mode == "disk" else None
    if mode == "disk" and cache is None:
        mode = "memory"
    # Before any decoding: a dataset the cache cannot hold is one error naming the others.
    room = check_cache_room(paths, config.item_resize, config.resize_method, mode,
                            config.cache_limit, cache)
    if room is not None:
        say(room.describe())
    t0 = time.perf_counter()
    if processes.distributed and cache is not None:
        share = paths[processes.rank::processes.world_size]
        with bar("reading photos (this process's share)", len(share)) as progress:
            decode_photos(share, config.item_resize, config.resize_method, workers=workers,
                          on_progress=progress.advance, cache_dir=cache)
        distributed.wait_for_all(processes)
    with bar("checking photos" if mode == "off" else "reading photos", len(paths)) as progress:
        decoded = decode_photos(paths, config.item_resize, config.resize_method,
                                workers=workers, on_progress=progress.advance,
                                cache_dir=cache, keep_pixels=mode != "off")
    cached = f", {decoded.from_cache} of them already decoded in {cache}" if cache else ""
    if mode == "off":
        cached = "; each is decoded again every epoch (--cache off)"
    say(f"{'Checked' if mode == 'off' else 'Read'} {len(paths)} photos in "
        f"{time.perf_counter() - t0:.1f} s{cached}.")
    if write_skipped:
        fileio.write_csv(run_dir / "skipped.csv", ("path", "reason"),
                         [(str(p), reason) for p, reason in decoded.skipped])
    if decoded.skipped:
        warn(f"Skipped {len(decoded.skipped)} unreadable file(s) (listed in "
             f"RUN/skipped.csv), e.g. {decoded.skipped[0][0]}: {decoded.skipped[0][1]}")
        photo_set = photo_set.without({p for p, _ in decoded.skipped})
    return photo_set, decoded.pixels


def _workers_per_process(config: TrainConfig, processes: Processes) -> int | None:
    """--workers, or the cores shared among the processes on this machine."""
    check_process_count("workers", config.workers, "processes that decode photos")
    if config.workers is not None or processes.local_world_size == 1:
        return config.workers
    return max(1, default_workers() // processes.local_world_size)


def _usable_cache_dir() -> Path | None:
    """The decoded-photo cache folder, or None (photos decoded into memory) with a warning
    when it cannot be written: a file of that name, no permission, a read-only disk."""
    folder = default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fileio.write_text(folder / ".writable", "")
    except OSError as e:
        warn(f"Cannot write the decoded-photo cache in {folder} ({e.strerror or e}); decoding "
             "into memory instead. Set CLEARCLASS_CACHE_DIR to a writable folder, or pass "
             "--cache memory or --cache off.")
        return None
    return folder


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _model_info(config: TrainConfig, photo_set: PhotoSet, pretrained: Pretrained,
                run_id: str) -> ModelInfo:
    return ModelInfo(
        architecture=config.model,
        class_ids=list(photo_set.class_ids),
        class_names=photo_set.display_names,
        size=config.item_resize,
        resize_method=config.resize_method,
        mean=pretrained.mean,
        std=pretrained.std,
        training={"run_id": run_id, "data": str(Path(config.data).resolve()),
                  "pretrained": pretrained.describe(),
                  "train_photos": len(photo_set.train), "valid_photos": len(photo_set.valid)},
    )


def _write_split(photo_set: PhotoSet, run_dir: Path) -> None:
    rows = [(str(p.path.resolve()), p.label, p.is_valid) for p in photo_set.photos]
    fileio.write_csv(run_dir / "split.csv", ("path", "label", "is_valid"), rows)


def _write_config(run_dir: Path, config: TrainConfig, pretrained: Pretrained,
                  compute: devices.Compute, run_id: str) -> None:
    # run_id is also in model.json: the two must agree in any state of the folder. The
    # split is written first, into the same change: its checksum is what read_split checks.
    data = {"config": config.to_dict(), "run_id": run_id, "pretrained": pretrained.describe(),
            "device": compute.describe(), SPLIT_CHECKSUM: split_checksum(run_dir)}
    fileio.write_json(run_dir / "config.json", data)


def _write_summary(run: TrainingRun) -> None:
    summary = {
        "valid_accuracy": run.accuracy,
        "epochs": [r.__dict__ for r in run.history],
        "timings": run.timings,
    }
    fileio.write_text(run.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")


def _mmss(seconds: float) -> str:
    return f"{int(seconds // 60):02d}:{int(seconds % 60):02d}"


def _seconds(mmss: str) -> float:
    minutes, _, seconds = mmss.partition(":")
    return int(minutes) * 60 + int(seconds or 0)
