"""The training loop: fastai's `fine_tune`, written out to be read top to bottom.

1. find the photos and decode each once (unreadable files are listed in skipped.csv);
2. build the model with a new head and move it to the device, channels_last;
3. with the pretrained body frozen, train the head one-cycle for `freeze_epochs`; then
   unfreeze and train everything one-cycle for `epochs`, the body `body_slowdown` times
   slower. Unless `adapt_batchnorm`, the body keeps its pretrained BatchNorm statistics:
   the frozen body then runs forward only, and unfrozen batches can be split into chunks
   that give the same gradient with a fraction of the memory;
4. after every epoch, show the metrics row and save it with the model bundle, so an
   interrupted run keeps its last finished epoch.

The run folder changes as a unit (`fileio.FolderChange`): until the first epoch is saved
the run is written beside it, and each epoch's metrics and model are swapped in together.
Whenever the process dies, RUN holds the previous complete state or the next one; with
`overwrite`, the previous run stays until the new one has a model.
"""

from __future__ import annotations

import json
import math
import random
import time
import uuid
from collections.abc import Sequence
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
from clearclass.data.sources import PhotoSet, find_photos
from clearclass.errors import RunError
from clearclass.export import export_onnx
from clearclass.model import (
    Pretrained,
    body_and_head,
    create_model,
    forward_fixed_body,
    set_body_trainable,
    set_train_mode,
)
from clearclass.progress import LiveTable, bar, say, warn
from clearclass.training.config import TrainConfig, make_config
from clearclass.training.run_folder import run_folder

METRICS_HEADER = ("epoch", "train_loss", "valid_loss", "accuracy", "time", "stage")
METRICS_WIDTHS = (6, 11, 11, 9, 6, 8)  # characters of each column of the epoch table
MIN_STEPS_PER_EPOCH = 8  # below this, warn: one-cycle warm-up and cool-down leave no training
SYNC_EVERY = 10  # steps between reading the loss back from the device


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

    @property
    def files_dir(self) -> Path:
        """Where the run's files are written now: run_dir, or its staging folder."""
        return self.staging.path if self.staging is not None else self.run_dir

    @property
    def model_dir(self) -> Path:
        return self.run_dir / "model"

    @property
    def accuracy(self) -> float:
        """Validation accuracy after the last epoch."""
        return self.history[-1].accuracy if self.history else float("nan")

    def evaluate(self, device: str = "auto"):
        """Evaluate this run on its validation photos (see `clearclass.evaluate`)."""
        from clearclass.evaluation import evaluate

        return evaluate(self.run_dir, device=device)

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
    with run_folder(config) as (run_dir, staging):
        return _fine_tune(TrainingRun(run_dir, config, staging=staging), started)


def _fine_tune(run: TrainingRun, started: float) -> TrainingRun:
    config = run.config
    session = prepare(config, run)
    session.table = LiveTable(METRICS_HEADER, METRICS_WIDTHS)
    model = session.model
    steps = len(session.train_batches)
    if steps < MIN_STEPS_PER_EPOCH:
        warn(f"Only {steps} training step(s) per epoch (batches of {config.batch_size}): a "
             "one-cycle schedule that short barely moves the weights. Use a smaller "
             "batch size or more epochs.")

    # fine_tune: frozen body first, then everything, the body learning body_slowdown times
    # slower.
    try:
        if config.freeze_epochs:
            freeze_body(session, config)
            # fastai's `slice(base_lr)`: norm layers at a tenth. The head learns faster than
            # fastai's because it is one zero-initialised linear layer on raw features where
            # fastai's normalises them first (measured: benchmarks/README.md).
            rates = (config.learning_rate / 10, config.learning_rate * config.head_speedup)
            fit_one_cycle(session, config.freeze_epochs, rates, "frozen", pct_start=0.99,
                          div=25.0)
        if config.epochs:
            set_body_trainable(model, True)
            session.body_fixed = False
            session.adapt_batchnorm = config.will_adapt_batchnorm
            session.micro_batch = _micro_batch(config, session.compute)
            top = config.learning_rate / 2
            fit_one_cycle(session, config.epochs, (top / config.body_slowdown, top), "unfrozen",
                          pct_start=0.3, div=5.0)
    except KeyboardInterrupt:
        done = len(run.history)
        if done:
            where = f"the model as of epoch {done - 1} is in {run.model_dir}"
        elif run.run_dir.exists():
            where = f"no epoch had finished; {run.run_dir} still holds the previous run"
        else:
            where = "no epoch had finished, so nothing was saved"
        warn(f"Training interrupted; {where}.")
        raise

    t0 = time.perf_counter()
    _export_onnx(run)
    run.timings["onnx_export_seconds"] = time.perf_counter() - t0
    run.timings["total_seconds"] = time.perf_counter() - started
    _write_summary(run)
    say(f"Validation accuracy {run.accuracy:.2%}. Model saved in {run.model_dir}.")
    return run


def prepare(config: TrainConfig, run: TrainingRun) -> _Session:
    """Photos found, split and decoded once; the model built on its device."""
    run_dir = run.files_dir
    _seed_everything(config.seed)
    compute = devices.select(config.device, config.precision)
    if compute.device.type == "cpu":
        # Halves the step time on the CPU; the process then keeps its peak memory until it
        # exits (device.keep_freed_memory says why).
        devices.keep_freed_memory()

    photo_set = find_photos(config.data, config.validation_fraction, config.seed)
    for note in photo_set.notes:
        say(note)
    t0 = time.perf_counter()
    photo_set, pixels = _decode(photo_set, config, run_dir)
    run.timings["decode_seconds"] = time.perf_counter() - t0
    _write_split(photo_set, run_dir)
    class_index = {c: i for i, c in enumerate(photo_set.class_ids)}
    train_idx = [i for i, p in enumerate(photo_set.photos) if not p.is_valid]
    valid_idx = [i for i, p in enumerate(photo_set.photos) if p.is_valid]
    say(f"{len(photo_set.class_ids)} classes, {len(train_idx)} training and {len(valid_idx)} "
        f"validation photos ({photo_set.layout}).")

    torch.manual_seed(config.seed)
    model, pretrained = create_model(config.model, len(photo_set.class_ids),
                                     pretrained=config.pretrained, weights=config.weights)
    model = model.to(compute.device, memory_format=torch.channels_last)
    say(f"Model {config.model} from {pretrained.describe()}; training on {compute.describe()}.")
    _write_config(run_dir, config, pretrained, compute, run.run_id)

    def batches(indices: list[int], training: bool) -> PhotoBatches:
        return PhotoBatches(take(pixels, indices),
                            [class_index[photo_set.photos[i].label] for i in indices],
                            config.item_resize, config.resize_method, config.batch_size,
                            training=training, seed=config.seed,
                            pin_memory=compute.device.type == "cuda", workers=config.workers)

    return _Session(
        model=model, compute=compute,
        train_batches=batches(train_idx, True), valid_batches=batches(valid_idx, False),
        augment=augment_settings(config.batch_augment, config.augment_strength),
        augment_gen=torch.Generator().manual_seed(config.seed),
        info=_model_info(config, photo_set, pretrained, run.run_id), run=run,
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
    x = normalize(images, info.mean, info.std)
    forward = forward_fixed_body if session.body_fixed else _forward
    chunk = session.micro_batch or len(labels)
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=compute.device)
    # In chunks, activations for back-propagation are held for one chunk at a time. With
    # BatchNorm statistics fixed, a photo's output does not depend on its batch, so the
    # summed gradient is the whole batch's.
    for xs, ys in zip(x.split(chunk), labels.split(chunk)):
        with compute.autocast:
            loss = F.cross_entropy(forward(session.model, xs), ys) * (len(ys) / len(labels))
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


def freeze_body(session: _Session, config: TrainConfig) -> None:
    """Only the head learns; unless BatchNorm statistics adapt, the body runs forward only."""
    set_body_trainable(session.model, False, adapt_batchnorm=config.will_adapt_batchnorm)
    session.body_fixed = not config.will_adapt_batchnorm


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


def fit_one_cycle(session: _Session, epochs: int, rates: tuple[float, float], stage: str,
                  pct_start: float, div: float) -> None:
    """Train `epochs` epochs with one-cycle learning rates and momentum, AdamW.

    `rates`: peak learning rates of the body and of the head.
    """
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
    for _ in range(epochs):
        epoch = len(session.run.history)
        t0 = time.perf_counter()
        train_loss = train_one_epoch(session, optimizer, scheduler, epoch, stage)
        valid_loss, accuracy = evaluate(session.model, session.valid_batches, session.compute,
                                        session.info.mean, session.info.std)
        row = EpochRow(epoch, train_loss, valid_loss, accuracy, time.perf_counter() - t0, stage)
        _record(session, row)


def train_one_epoch(session: _Session, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, epoch: int,
                    stage: str) -> float:
    """One pass over the training photos; returns the mean training loss.

    The loss is summed on the device and read back only every few steps, so that a GPU
    is not made to wait for the CPU after every batch.
    """
    set_train_mode(session.model, body_fixed=session.body_fixed,
                   adapt_batchnorm=session.adapt_batchnorm)
    session.train_batches.set_epoch(epoch)
    total = torch.zeros((), device=session.compute.device)
    count, waited, steps = 0, 0.0, len(session.train_batches)
    started = time.perf_counter()
    with bar(f"epoch {epoch} ({stage})", steps) as progress:
        t0 = time.perf_counter()
        for step, (images, labels) in enumerate(session.train_batches):
            waited += time.perf_counter() - t0  # the device had nothing to do meanwhile
            loss = training_step(session, images, labels, optimizer)
            scheduler.step()
            total += loss * len(labels)
            count += len(labels)
            progress.advance()
            if step % SYNC_EVERY == SYNC_EVERY - 1 or step == steps - 1:
                mean = total.item() / count
                _check_finite(mean, epoch)
                progress.set_info(f"loss {mean:.4f}")
            t0 = time.perf_counter()
    mean = total.item() / max(count, 1)
    session.run.timings[f"epoch_{epoch}_train_seconds"] = time.perf_counter() - started
    session.run.timings[f"epoch_{epoch}_data_wait_seconds"] = waited
    return mean


def _check_finite(loss: float, epoch: int) -> None:
    if not math.isfinite(loss):
        raise RunError(
            f"The training loss became {loss} at epoch {epoch}: the learning rate is too "
            "high for this model and data. Lower the learning rate (--learning-rate; "
            "`clearclass lr-find` suggests one)."
        )


@torch.no_grad()
def evaluate(model: nn.Module, batches: PhotoBatches, compute: devices.Compute,
             mean: tuple, std: tuple) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over the validation photos."""
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
    if not count:  # nothing was measured; 0% would read as a result
        return math.nan, math.nan
    return total_loss.item() / count, correct.item() / count


def _record(session: _Session, row: EpochRow) -> None:
    """Show the epoch's row; save it and the model into the run folder, as one change."""
    run = session.run
    if session.table is not None:
        session.table.add_row(row.cells())
    rows = [*run.history, row]
    session.info.training.update(epochs_done=len(rows), valid_accuracy=row.accuracy,
                                 valid_loss=row.valid_loss)
    change = run.staging or fileio.FolderChange(run.run_dir)
    try:
        fileio.write_csv(change.path / "metrics.csv", METRICS_HEADER, [r.cells() for r in rows])
        save_bundle(session.model, session.info, change.path / "model")
        change.commit()
        run.history.append(row)  # only once saved: history is what RUN holds
    except OSError as e:
        change.discard()
        kept = (f"{run.run_dir} still holds epoch {row.epoch - 1}" if run.history
                else f"{run.run_dir} still holds the previous run" if run.run_dir.exists()
                else "nothing was saved")
        raise RunError(f"Could not save epoch {row.epoch} ({e.strerror or e}: "
                       f"{e.filename or run.run_dir}); {kept}. Free some space (or fix the "
                       "folder's permissions) and train again.") from e
    except BaseException:
        change.discard()
        raise
    finally:
        run.staging = None


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


def _decode(photo_set: PhotoSet, config: TrainConfig,
            run_dir: Path) -> tuple[PhotoSet, Sequence[np.ndarray]]:
    """Every photo checked (and, unless --cache off, decoded and kept) before training."""
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
    with bar("checking photos" if mode == "off" else "reading photos", len(paths)) as progress:
        decoded = decode_photos(paths, config.item_resize, config.resize_method,
                                workers=config.workers, on_progress=progress.advance,
                                cache_dir=cache, keep_pixels=mode != "off")
    cached = f", {decoded.from_cache} of them already decoded in {cache}" if cache else ""
    if mode == "off":
        cached = "; each is decoded again every epoch (--cache off)"
    say(f"{'Checked' if mode == 'off' else 'Read'} {len(paths)} photos in "
        f"{time.perf_counter() - t0:.1f} s{cached}.")
    fileio.write_csv(run_dir / "skipped.csv", ("path", "reason"),
                     [(str(p), reason) for p, reason in decoded.skipped])
    if decoded.skipped:
        warn(f"Skipped {len(decoded.skipped)} unreadable file(s) (listed in "
             f"RUN/skipped.csv), e.g. {decoded.skipped[0][0]}: {decoded.skipped[0][1]}")
        photo_set = photo_set.without({p for p, _ in decoded.skipped})
    return photo_set, decoded.pixels


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
    # run_id is also in model.json: the two must agree in any state of the folder.
    data = {"config": config.to_dict(), "run_id": run_id, "pretrained": pretrained.describe(),
            "device": compute.describe()}
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
