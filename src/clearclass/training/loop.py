"""The training loop: fastai's `fine_tune`, written out to be read top to bottom.

1. `set_up`: find the photos and read each once (`data/reading.py`; unreadable files are
   listed in skipped.csv), and build the model with a new head on its device;
2. `fine_tune`: with the pretrained body frozen, train the head one-cycle for
   `freeze_epochs`; then unfreeze and train everything one-cycle for `epochs`, the body
   `body_slowdown` times slower. Unless `adapt_batchnorm`, the body keeps its pretrained
   BatchNorm statistics;
3. each epoch is `train_one_epoch` (AdamW steps, `training_step`) then `validate`; its row
   is shown and saved with the model and a checkpoint (`saving.py`), and a checkpoint is
   also saved every `checkpoint_minutes` inside an epoch and when Ctrl-C asks to stop
   (`stopping.py`), so that `resume` continues from where it stopped, with the same result.

Elsewhere, so that this file stays the recipe: the run folder's files (`run_folder.py`),
how a run is saved (`saving.py`, `checkpoint.py`), and the speed-ups that compute the same
steps sooner on the CPU (`speedups.py`, one switch). Under torchrun each process trains on
its share of every batch: DistributedDataParallel wraps what a step calls, and the process
of rank 0 alone prints and writes (`distributed.py`).
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from clearclass import device as devices
from clearclass.bundle import ModelInfo
from clearclass.data.augment import (
    AugmentSettings,
    augment_settings,
    batch_augment,
    normalize,
    resized,
)
from clearclass.data.loader import PhotoBatches, take
from clearclass.data.reading import read_photos, workers_per_process
from clearclass.data.sources import data_name, find_photos
from clearclass.errors import RunError, SettingError
from clearclass.model import (
    body_and_head,
    create_model,
    feature_stages,
    freeze_early_stages,
    set_body_trainable,
    set_head_bias,
    set_train_mode,
    stages_finer_than,
)
from clearclass.progress import LiveTable, bar, quiet, say, warn
from clearclass.run_folder import (
    EpochRow,
    RunFolder,
    metrics_columns,
    resuming,
    run_dir_for,
    run_folder,
    run_path,
)
from clearclass.task import (
    SINGLE_LABEL,
    MultiLabel,
    SingleLabel,
    task_named,
)
from clearclass.tracking import RunFacts, Tracking, require
from clearclass.training import distributed, speedups
from clearclass.training.checkpoint import Checkpoint, Position
from clearclass.training.config import TrainConfig, make_config
from clearclass.training.distributed import Processes
from clearclass.training.resuming import finished_run, resumed_config, resumed_run
from clearclass.training.run import TrainingRun
from clearclass.training.saving import RunSaver, StageState, finish, model_info
from clearclass.training.stopping import StopRequest

MIN_STEPS_PER_EPOCH = 8  # below this, warn: one-cycle warm-up and cool-down leave no training
SYNC_EVERY = 10  # steps between reading the loss back from the device
# By default the unfrozen body keeps its stages at this stride or finer as pretrained.
FROZEN_STRIDE = 8
# The unfrozen stage's share of steps with a rising learning rate (fastai's fine_tune).
UNFROZEN_WARMUP = 0.3


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
    require(config.track)
    started = time.perf_counter()
    processes = distributed.from_environment()
    if not processes.main:  # the others only compute; process 0 prints and writes
        with quiet():
            run = TrainingRun(run_dir_for(config), config, processes=processes)
            return fine_tune(run, RunSaver(run), started)
    with run_folder(config) as (run_dir, staging):
        run = TrainingRun(run_dir, config, processes=processes)
        return fine_tune(run, RunSaver(run, staging=staging), started)


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
    config = resumed_config(run_dir, settings)
    require(config.track)
    processes = distributed.from_environment()
    with resuming(run_dir) if processes.main else quiet():
        training, checkpoint = resumed_run(run_dir, config, processes)
        if checkpoint is None:
            return finished_run(training)
        return fine_tune(training, RunSaver(training, saved=checkpoint.position), started,
                         checkpoint)


@dataclass
class Setup:
    """What the whole run trains with, built once by `set_up`."""

    model: nn.Module
    compute: devices.Compute
    info: ModelInfo
    train_batches: PhotoBatches
    valid_batches: PhotoBatches
    augment: AugmentSettings | None
    augment_generator: torch.Generator  # reseeded every step (`seed_step`)
    scaler: torch.amp.GradScaler | None  # float16 only
    frozen_stages: int  # --frozen-stages, resolved for the model
    task: SingleLabel | MultiLabel = SINGLE_LABEL  # the loss, metric and decision (task.py)
    tracking: Tracking = field(default_factory=Tracking)  # --track (process 0 only)


@dataclass
class Validation:
    """What `validate` measured: the mean loss, the accuracy, and (multi-label) every
    validation photo's probabilities, in the photos' order, for the scores that need them
    all (F1, average precision) and for --threshold auto."""

    loss: float
    accuracy: float
    probabilities: np.ndarray | None = None


@dataclass(frozen=True)
class StagePlan:
    """One stage of fine_tune: its epochs and its one-cycle schedule."""

    name: str  # "frozen" (the head learns) or "unfrozen" (everything learns)
    first_epoch: int
    epochs: int
    rates: tuple[float, float]  # peak learning rates of the body and of the head
    pct_start: float  # the share of steps with a rising learning rate
    div: float  # the learning rate starts at peak / div

    @property
    def end(self) -> int:
        return self.first_epoch + self.epochs


@dataclass
class Stage:
    """A stage being trained; what a checkpoint saves of it is `state`."""

    plan: StagePlan
    state: StageState  # its name, optimizer and schedule
    forward: nn.Module  # what a step calls: wrapped in DistributedDataParallel under torchrun
    calls: speedups.StageForward
    warmup_steps: int = 0  # the first steps, on photos of --warmup-size
    body_forward_only: bool = False  # the frozen body keeps its BatchNorm statistics
    adapt_batchnorm: bool = True
    frozen_modules: tuple[str, ...] = ()  # early stages that keep their pretrained weights


def fine_tune(run: TrainingRun, saver: RunSaver, started: float,
              checkpoint: Checkpoint | None = None) -> TrainingRun:
    """fastai's fine_tune: frozen body first, then everything, the body learning
    body_slowdown times slower. A resumed run skips what its checkpoint had done."""
    config, processes = run.config, run.processes
    start = checkpoint.position if checkpoint else Position()
    try:
        setup = set_up(run, saver, checkpoint)
        table = (LiveTable(*metrics_columns(setup.task.score_names)) if processes.main
                 else None)
        for row in run.history if table is not None else ():
            table.add_row(row.cells())
        steps = len(setup.train_batches)
        if steps < MIN_STEPS_PER_EPOCH:
            warn(f"Only {steps} training step(s) per epoch (batches of {config.batch_size}): "
                 "a one-cycle schedule that short barely moves the weights. Use a smaller "
                 "batch size or more epochs.")
        lr = config.learning_rate
        # fastai's `slice(base_lr)`: norm layers at a tenth. The head learns faster than
        # fastai's because it is one zero-initialised linear layer on raw features where
        # fastai's normalises them first (measured: benchmarks/README.md).
        plan = [StagePlan("frozen", 0, config.freeze_epochs,
                          (lr / 10, lr * config.head_speedup), pct_start=0.99, div=25.0),
                StagePlan("unfrozen", config.freeze_epochs, config.epochs,
                          (lr / 2 / config.body_slowdown, lr / 2), UNFROZEN_WARMUP, 5.0)]
        with StopRequest(processes) as stop:
            for stage_plan in plan:
                if stage_plan.epochs and start.epochs_done < stage_plan.end:
                    with begin_stage(stage_plan, setup, config, processes) as stage:
                        if checkpoint is not None and checkpoint.stage == stage_plan.name and (
                                start.epochs_done > stage_plan.first_epoch or start.step > 0):
                            checkpoint.load_optimizer(stage.state.optimizer)
                            checkpoint.load_scheduler(stage.state.scheduler)
                            checkpoint.load_scaler(setup.scaler)
                        fit_stage(run, setup, stage, start, saver, stop, table)
    except KeyboardInterrupt:
        saver.interrupted()
        raise
    except Exception:
        saver.tracking.stopped(interrupted=False)
        raise
    finally:
        distributed.stop()
    if processes.main:
        finish(run, started, saver.tracking)
        say(f"{run.headline}. Model saved in {run.model_dir}.")
    return run


def fit_stage(run: TrainingRun, setup: Setup, stage: Stage, start: Position, saver: RunSaver,
              stop: StopRequest, table: LiveTable | None) -> None:
    """The stage's epochs (from `start` when resuming): train, validate, show and save."""
    config, plan = run.config, stage.plan
    for epoch in range(max(plan.first_epoch, start.epochs_done), plan.end):
        position = start if epoch == start.epochs_done else Position(epoch)
        t0 = time.perf_counter()
        train_loss = train_one_epoch(run, setup, stage, epoch, position, saver, stop)
        distributed.share_buffers(setup.model, run.processes)  # validate what is saved
        valid = validate(stage.calls.validation(len(setup.valid_batches)),
                         setup.valid_batches, setup.compute, setup.info, run.processes,
                         setup.task)
        # Multi-label: F1 and mAP, and with --threshold auto each label's tuned threshold.
        accuracy, scores, thresholds = setup.task.epoch_scores(
            valid.accuracy, valid.probabilities, setup.valid_batches.targets.numpy(),
            config.threshold_value)
        if thresholds is not None:  # saved with the model (model.json)
            setup.info.thresholds = thresholds
        seconds = position.seconds + time.perf_counter() - t0
        row = EpochRow(epoch, train_loss, valid.loss, accuracy, seconds, plan.name, scores)
        if table is not None:
            table.add_row(row.cells())
        last = epoch == config.freeze_epochs + config.epochs - 1
        saver.epoch_done(row, stage.state, finished=last)
        if not last and stop.requested()[0]:
            raise KeyboardInterrupt  # the epoch's checkpoint is saved


def set_up(run: TrainingRun, saver: RunSaver, checkpoint: Checkpoint | None = None) -> Setup:
    """Photos found, split and read once; the model built on its device.

    Resuming from `checkpoint`: the photos of the run's split.csv, the checkpoint's weights.
    A new run's first files (skipped.csv, split.csv, config.json) go into `saver.folder`.
    """
    config, processes = run.config, run.processes
    if config.batch_size % processes.world_size:
        raise SettingError("batch_size", f"is the photos of one step across all "
                           f"{processes.world_size} processes, so it must divide among them; "
                           f"got {config.batch_size}.")
    seed_everything(config.seed)
    compute = devices.select(distributed.device_for(config.device, processes),
                             config.precision)
    distributed.start(processes, compute.device)
    speedups.for_process(compute)

    if checkpoint is None:
        photo_set = find_photos(config.data, config.validation_fraction, config.seed,
                                config.task, config.label_delimiter)
    else:
        photo_set = RunFolder(run.run_dir).split(checkpoint.info.class_ids,
                                                 checkpoint.info.task)
    for note in photo_set.notes:
        say(note)
    t0 = time.perf_counter()
    workers = workers_per_process(config.workers, processes.local_world_size)
    photos = read_photos(photo_set, config.item_resize, config.resize_method, config.cache,
                         config.cache_limit, workers, (processes.rank, processes.world_size),
                         lambda: distributed.wait_for_all(processes))
    run.timings["decode_seconds"] = time.perf_counter() - t0
    if checkpoint is not None and photos.skipped:
        raise RunError(f"Some photos of {run.run_dir}/split.csv can no longer be read (see "
                       "the warning above); a resumed run needs the same photos. Restore them, "
                       "or train again.")
    photo_set = photos.photo_set
    train_idx = [i for i, p in enumerate(photo_set.photos) if not p.is_valid]
    valid_idx = [i for i, p in enumerate(photo_set.photos) if p.is_valid]
    classes = "labels" if photo_set.task == "multi" else "classes"
    say(f"{len(photo_set.class_ids)} {classes}, {len(train_idx)} training and {len(valid_idx)} "
        f"validation photos ({photo_set.layout}).")

    # The loss, metric and decision (task.py); --balance weights: the training photos'.
    targets = photo_set.targets()  # class indices, or multi-hot rows
    task = task_named(photo_set.task, None if checkpoint is None else checkpoint.info.thresholds
                      ).for_training(config.balance, targets[train_idx], len(photo_set.class_ids))
    torch.manual_seed(config.seed)
    if checkpoint is None:
        model, pretrained = create_model(config.model, len(photo_set.class_ids),
                                         pretrained=config.pretrained, weights=config.weights)
        bias = task.initial_bias(targets[train_idx])  # multi-label: each label's frequency
        if bias is not None:
            set_head_bias(model, bias)
        info, origin = model_info(config, photo_set, pretrained, run.run_id), pretrained.describe()
    else:
        model, _ = create_model(config.model, len(photo_set.class_ids), pretrained=False)
        checkpoint.load_model(model)
        info, origin = checkpoint.info, "its checkpoint"
    model = model.to(compute.device, memory_format=torch.channels_last)
    frozen = frozen_stages(config, model)
    where = compute.describe()
    if processes.distributed:
        where = f"{processes.world_size} processes, each on {where}"
    kept = ""
    if frozen and config.epochs:
        kept = (f" Once unfrozen, its first {frozen} feature stage(s) keep their "
                "pretrained weights (--frozen-stages).")
    say(f"Model {config.model} from {origin}; training on {where}.{kept}")
    if checkpoint is None and processes.main:
        folder = saver.folder
        folder.write_skipped(photos.skipped)
        folder.write_split(photo_set)  # before config.json, which records its checksum
        folder.write_config(config, {"run_id": run.run_id, "pretrained": pretrained.describe(),
                                     "device": compute.describe()})

    def batches(indices: list[int], training: bool) -> PhotoBatches:
        # Each process takes its share of every batch: --batch-size stays the photos of one
        # step, whatever the number of processes, and so does the learning rate.
        return PhotoBatches(take(photos.pixels, indices), targets[indices],
                            config.item_resize, config.resize_method,
                            config.batch_size // processes.world_size,
                            training=training, seed=config.seed,
                            pin_memory=compute.device.type == "cuda", workers=workers,
                            shard=(processes.rank, processes.world_size),
                            balanced=training and config.balance == "sampler")

    scaler = torch.amp.GradScaler(compute.device.type) if compute.needs_grad_scaler else None
    tracking = Tracking()
    if config.track and processes.main:
        tracking = Tracking.start(config.track, RunFacts(
            run.run_dir, config.to_dict(),
            data_name(str(Path(config.data).expanduser().resolve())) or "data",
            photo_set.display_names,
            len(train_idx), len(valid_idx), where, config.experiment,
            resumed=checkpoint is not None, history=run.history))
    saver.attach(model, info, scaler, tracking)
    return Setup(model, compute, info, batches(train_idx, True), batches(valid_idx, False),
                 augment_settings(config.batch_augment, config.augment_strength),
                 torch.Generator().manual_seed(config.seed), scaler, frozen, task, tracking)


@contextlib.contextmanager
def begin_stage(plan: StagePlan, setup: Setup, config: TrainConfig,
                processes: Processes) -> Iterator[Stage]:
    """The stage ready to train: what learns, AdamW over it with the plan's peak rates,
    fastai's one-cycle schedule, and what a step calls."""
    model, frozen, rates = setup.model, plan.name == "frozen", plan.rates
    adapt = config.will_adapt_batchnorm
    if frozen:  # only the head learns (and, with --adapt-batchnorm, the norm layers)
        set_body_trainable(model, False, adapt_batchnorm=adapt)
        frozen_modules: tuple[str, ...] = ()
    else:
        set_body_trainable(model, True)
        frozen_modules = tuple(freeze_early_stages(model, setup.frozen_stages))
    groups = [[p for p in g if p.requires_grad] for g in body_and_head(model)]
    optimizer = torch.optim.AdamW(
        [{"params": g, "lr": rate} for g, rate in zip(groups, rates) if g],
        betas=(0.9, 0.99), eps=1e-5, weight_decay=config.weight_decay)
    # fastai's schedule: warm up from lr/div, cosine down to lr/1e5; beta1 0.95-0.85-0.95.
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[rate for g, rate in zip(groups, rates) if g],
        total_steps=plan.epochs * len(setup.train_batches), pct_start=plan.pct_start,
        div_factor=plan.div, final_div_factor=1e5 / plan.div, base_momentum=0.85,
        max_momentum=0.95)
    warmup = round(plan.pct_start * plan.epochs * len(setup.train_batches)) \
        if config.warmup_size and not frozen else 0
    with speedups.stage(model, setup.compute, frozen=frozen, adapt_batchnorm=adapt,
                        batch_size=config.batch_size, item_resize=config.item_resize,
                        train_batches=len(setup.train_batches)) as calls:
        yield Stage(plan, StageState(plan.name, optimizer, scheduler),
                    distributed.wrap(calls.step, processes, setup.compute.device), calls,
                    warmup_steps=warmup, body_forward_only=frozen and not adapt,
                    adapt_batchnorm=True if frozen else adapt, frozen_modules=frozen_modules)


def train_one_epoch(run: TrainingRun, setup: Setup, stage: Stage, epoch: int,
                    start: Position, saver: RunSaver, stop: StopRequest) -> float:
    """One pass over the training photos (from `start.step` when resuming); returns the mean
    training loss, over every process.

    The loss is summed on the device and read back only every few steps, so that a GPU
    is not made to wait for the CPU after every batch. Every `checkpoint_minutes`, and when
    asked to stop (Ctrl-C, SIGTERM), a checkpoint is saved between two steps.
    """
    processes, device = run.processes, setup.compute.device
    set_train_mode(setup.model, body_forward_only=stage.body_forward_only,
                   adapt_batchnorm=stage.adapt_batchnorm, frozen=stage.frozen_modules)
    setup.train_batches.set_epoch(epoch, start.step)
    # A checkpoint holds the loss summed over every process; process 0 carries it on.
    total = torch.tensor(start.loss_sum if processes.main else 0.0, device=device)
    count = start.count if processes.main else 0
    waited, steps, started = 0.0, len(setup.train_batches), time.perf_counter()

    def summed() -> torch.Tensor:  # (loss sum, photos) over every process
        return distributed.sum_all(torch.stack([total.double(), torch.tensor(
            float(count), dtype=torch.float64, device=device)]), processes)

    with bar(f"epoch {epoch} ({stage.state.name})", steps) as progress:
        progress.advance(start.step)
        t0 = time.perf_counter()
        for step, (images, targets) in enumerate(setup.train_batches, start=start.step):
            waited += time.perf_counter() - t0  # the device had nothing to do meanwhile
            seed_step(setup, run.config.seed, processes.rank, epoch, step)
            loss = training_step(setup, stage, images, targets, run.config.warmup_size)
            # The loss stays on the device; the head's learning rate is the step's.
            setup.tracking.step(epoch * steps + step, loss, stage.state.scheduler.get_last_lr()[-1])
            stage.state.scheduler.step()
            total += loss * len(targets)
            count += len(targets)
            progress.advance()
            synced = step % SYNC_EVERY == SYNC_EVERY - 1 or step == steps - 1
            if synced:
                mean = total.item() / count
                check_finite(mean, epoch)
                progress.set_info(f"loss {mean:.4f}")
            # Between steps, where the weights and the optimizer agree. Under DDP every
            # process must decide alike, so they agree only at sync points.
            if step < steps - 1 and (synced or not processes.distributed):
                asked, due = stop.requested(saver.checkpoint_due())
                if due or asked:
                    loss_sum, photos = summed().tolist()
                    saver.checkpoint(Position(epoch, step + 1, loss_sum, int(photos),
                                              start.seconds + time.perf_counter() - started),
                                     stage.state, after_stop=asked)
                if asked:
                    raise KeyboardInterrupt
            t0 = time.perf_counter()
    loss_sum, photos = summed().tolist()
    run.timings[f"epoch_{epoch}_train_seconds"] = time.perf_counter() - started
    run.timings[f"epoch_{epoch}_data_wait_seconds"] = waited
    return loss_sum / max(photos, 1)


def training_step(setup: Setup, stage: Stage, images: torch.Tensor, targets: torch.Tensor,
                  warmup_size: int | None = None) -> torch.Tensor:
    """Augment, forward, backward and step on one batch; returns the loss (on the device)."""
    compute, optimizer = setup.compute, stage.state.optimizer
    images = images.to(compute.device, non_blocking=True)
    targets = targets.to(compute.device, non_blocking=True)
    if setup.augment is not None:
        images = batch_augment(images, setup.augment, setup.augment_generator)
    if setup.tracking.wants_photos:  # TensorBoard shows what the network sees
        setup.tracking.photos(images.float() / 255 if images.dtype == torch.uint8 else images)
    # The scheduler counts the stage's steps, so a resumed run resizes the same ones.
    if warmup_size and stage.state.scheduler.last_epoch < stage.warmup_steps:
        images = resized(images, warmup_size)
    x = normalize(images, setup.info.mean, setup.info.std)
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=compute.device)
    # In chunks (speedups.py), activations for back-propagation are held for one chunk at a
    # time; with BatchNorm statistics fixed, the summed gradient is the whole batch's. Under
    # DDP, gradients are averaged across processes once, after the last chunk.
    chunks = list(zip(x.split(stage.calls.micro_batch or len(targets)), targets.split(
        stage.calls.micro_batch or len(targets))))
    for k, (xs, ys) in enumerate(chunks):
        no_sync = getattr(stage.forward, "no_sync", None)
        with no_sync() if no_sync and k < len(chunks) - 1 else contextlib.nullcontext():
            with compute.autocast:
                loss = setup.task.loss(stage.forward(xs), ys) * (len(ys) / len(targets))
            (setup.scaler.scale(loss) if setup.scaler is not None else loss).backward()
        total += loss.detach()
    if setup.scaler is not None:
        setup.scaler.step(optimizer)
        setup.scaler.update()
    else:
        optimizer.step()
    return total


@torch.no_grad()
def validate(model: nn.Module | Any, batches: PhotoBatches, compute: devices.Compute,
             info: ModelInfo, processes: Processes | None = None,
             task: SingleLabel | MultiLabel = SINGLE_LABEL) -> Validation:
    """Mean loss and accuracy over the validation photos (each process measures its share;
    the sums are added up across processes); a multi-label task's probabilities too. `model`:
    the network, or a function that gives its logits (`speedups.StageForward.validation`)."""
    processes = processes or Processes()
    if isinstance(model, nn.Module):
        model.eval()
    total_loss = torch.zeros((), device=compute.device)
    correct = torch.zeros((), device=compute.device, dtype=torch.float64)
    count = 0
    # A task with scores beyond accuracy (multi-label: F1, mAP) needs every photo's
    # probabilities: each process fills the rows of its share (photos rank, rank + world,
    # ...: `PhotoBatches.epoch_plan`), and they are summed across processes.
    probabilities = (torch.zeros(batches.targets.shape, dtype=torch.float64,
                                 device=compute.device) if task.score_names else None)
    for images, targets in batches:
        x = normalize(images.to(compute.device, non_blocking=True), info.mean, info.std)
        targets = targets.to(compute.device, non_blocking=True)
        with compute.autocast:
            logits = model(x)
        # The plain loss, whatever --balance: valid_loss compares across runs (task.py).
        total_loss += task.loss(logits.float(), targets, reduction="sum", weighted=False)
        correct += task.correct(logits, targets)
        if probabilities is not None:
            rows = torch.arange(count, count + len(targets), device=compute.device)
            probabilities[rows * processes.world_size + processes.rank] = (
                task.torch_probabilities(logits.double()))
        count += len(targets)
    sums = torch.stack([total_loss.double(), correct.double(),
                        torch.tensor(float(count), dtype=torch.float64, device=compute.device)])
    total, right, count = distributed.sum_all(sums, processes).tolist()
    if probabilities is not None:
        probabilities = distributed.sum_all(probabilities, processes).cpu().numpy()
    if not count:  # nothing was measured; 0% would read as a result
        return Validation(math.nan, math.nan, probabilities)
    return Validation(total / count, right / count, probabilities)


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_step(setup: Setup, seed: int, rank: int, epoch: int, step: int) -> None:
    """Seed the step's random draws (augmentation, dropout) from where it is, so that a
    resumed run draws what the uninterrupted one did, and each process its own."""
    seed = (((seed * 1_000_003 + rank) * 1_000_033 + epoch) * 1_000_037 + step) % 2**63
    setup.augment_generator.manual_seed(seed)
    torch.manual_seed(seed)


def check_finite(loss: float, epoch: int) -> None:
    if not math.isfinite(loss):
        raise RunError(
            f"The training loss became {loss} at epoch {epoch}: the learning rate is too "
            "high for this model and data. Lower the learning rate (--learning-rate; "
            "`clearclass lr-find` suggests one)."
        )
