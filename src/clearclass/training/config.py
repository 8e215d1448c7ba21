"""The settings of a training run: one field per `clearclass train` option, help included.

`TrainConfig` is the one list of training options. `clearclass train`, `lr-find` and
`explore` build their command-line options from its fields (name, type, default, help,
group); the Python API takes the same names as keywords (`clearclass.train(DATA,
epochs=3)`); and a test checks the README's table of options against it.

Renamed settings (`RENAMED`) and old values (`OLD_VALUES`) are still accepted, as
keywords, in `config.json` of older runs, and as hidden command-line flags.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import numbers
import typing
import warnings
from collections.abc import Collection, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from clearclass.data.budget import CACHE_MODES, SIZE_UNITS_HELP, parse_size
from clearclass.data.decode import RESIZE_METHODS
from clearclass.device import DEVICES, PRECISIONS, is_device_name
from clearclass.errors import SettingError
from clearclass.task import BALANCE_MODES, TASK_CHOICES

# Groups of options, in the order `--help` shows them.
PHOTOS, MODEL, SCHEDULE, HARDWARE, OUTPUT = (
    "Photos", "Model", "Schedule", "Hardware", "Run folder")

# Old name -> current name. The old names were abbreviations (and four names for the
# BatchNorm choice); they keep working, with a DeprecationWarning in Python.
RENAMED = {
    "base_lr": "learning_rate",
    "lr_mult": "body_slowdown",
    "head_lr_mult": "head_speedup",
    "train_bn": "adapt_batchnorm",
    "valid_pct": "validation_fraction",
}

# Setting -> {old value: current value}, for settings whose values changed kind: `cache`
# was a switch (on: the disk cache; --no-cache: memory). Old values keep working, with a
# DeprecationWarning in Python, in older runs' config.json, and (a False) as a hidden
# --no-SETTING flag.
OLD_VALUES: dict[str, dict[Any, Any]] = {"cache": {True: "disk", False: "memory"}}


# --label-delimiter's rule, which `evaluate --data` checks too.
LABEL_DELIMITER_RULE = "must be one character, such as ';' or ' '"


def is_label_delimiter(value: object) -> bool:
    """Whether `value` may separate a CSV's labels: one character, or None (the default:
    ';', or spaces with --task multi when no cell has a ';')."""
    return value is None or (isinstance(value, str) and len(value) == 1)


def setting(default: Any, help: str, group: str, default_text: str | None = None) -> Any:
    """A field of TrainConfig: its default, its help (shown by --help) and its group.

    `default_text` describes a default that is worked out at run time (None in the field);
    MISSING as the default makes the setting required.
    """
    metadata = {"help": help, "group": group, "default_text": default_text}
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """How to fine-tune: the defaults follow fastai's `fine_tune` and `aug_transforms`.

    Example:
        config = clearclass.TrainConfig("photos/", model="efficientnet_lite0", epochs=3)
        print(config.learning_rate, config.will_adapt_batchnorm)  # 0.002 False
    """

    data: str = setting(
        MISSING, "The labelled photos: a folder of class folders (DATA/<class>/<photo>.jpg, "
                 "Stanford Dogs' Images/ too), a folder with train/ and valid/ (or val/, "
                 "test/) class folders, or a CSV file with columns path,label[,is_valid] "
                 "(paths relative to the CSV).", PHOTOS)
    task: str = setting(
        "auto", "single (one class per photo) or multi (a set of labels per photo, maybe "
                "none: sigmoid outputs, binary cross-entropy, a threshold). auto: multi when "
                "DATA is a CSV with a label cell that lists several labels or none, or whose "
                "cells with spaces all list labels found alone in other cells.", PHOTOS)
    label_delimiter: str | None = setting(
        None, "What separates the labels in a CSV's label cell (multi-label), e.g. ' ' for "
              "fastai's space-separated labels.", PHOTOS,
        default_text="; (with --task multi and no ; in any cell: spaces)")
    validation_fraction: float = setting(
        0.2, "Share of each class held out for validation when DATA has no split of its "
             "own.", PHOTOS)
    seed: int = setting(
        42, "Random seed for the split, the new head, batch order and augmentation.", PHOTOS)
    item_resize: int = setting(
        224, "Side, in pixels, of the square photos the model sees.", PHOTOS)
    resize_method: str = setting(
        "crop", "How a photo becomes square: crop (random crop in training, centre crop "
                "otherwise), squish (stretch), or pad (fit inside, black bars).", PHOTOS)
    batch_augment: str = setting(
        "standard", "Augmentation of each training batch: standard (fastai's aug_transforms "
                    "defaults: flips, rotation up to 10 degrees, zoom up to 1.1, perspective "
                    "warp 0.2, brightness and contrast 0.2) or none.", PHOTOS)
    augment_strength: float = setting(
        1.0, "Multiplies the rotation, warp and lighting of the augmentation (fastai's "
             "mult).", PHOTOS)
    workers: int | None = setting(
        None, "Processes that decode photos (with --cache off, every epoch); 0 decodes in "
              "the main process; at most 4 per core.", PHOTOS,
        default_text="one per core, at most 8")
    cache: str = setting(
        "disk", "Where decoded photos are kept between epochs: disk ($CLEARCLASS_CACHE_DIR, "
                "else ~/.cache/clearclass, keyed by the file's bytes, so the next run skips "
                "decoding too), memory (in the training process: memory grows with the "
                "photos), or off (nothing kept: every photo is decoded again each epoch, in "
                "--workers processes; for datasets bigger than memory and disk).", PHOTOS)
    cache_limit: str | None = setting(
        None, f"The most room decoded photos may take in the memory or disk cache: "
              f"{SIZE_UNITS_HELP}. Before decoding, training estimates the room from the "
              "photos' headers and stops with an error if it is more.", PHOTOS,
        default_text="memory: half the available memory; disk: the free space less 10%")

    model: str = setting(
        "resnet34", "Any timm architecture, e.g. resnet34, efficientnet_lite0, "
                    "convnext_tiny.", MODEL)
    weights: str | None = setting(
        None, "Pretrained weights file (.safetensors, or .pth of plain tensors) instead of "
              "the usual source.", MODEL,
        default_text="timm's download (efficientnet_lite0: the offline package if installed)")
    pretrained: bool = setting(
        True, "Start from ImageNet weights; --no-pretrained starts from random weights.", MODEL)
    threshold: str = setting(
        "0.5", "Multi-label: a label is predicted when its probability reaches this (between "
               "0 and 1), or auto: for each label, the threshold with the best F1 on the "
               "validation photos. Saved in model.json for predict and serve.", MODEL)

    epochs: int = setting(
        1, "Epochs with the whole model trainable, after the frozen ones.", SCHEDULE)
    freeze_epochs: int = setting(
        1, "Epochs first with the pretrained body frozen: only the new head learns.", SCHEDULE)
    learning_rate: float = setting(
        2e-3, "Base learning rate, as fastai's base_lr: the head's peak rate once unfrozen is "
              "half of it, the body's lower still (see --body-slowdown). `clearclass "
              "lr-find` suggests one.", SCHEDULE)
    body_slowdown: float = setting(
        100.0, "Once unfrozen, the pretrained body learns this many times slower than the "
               "new head (fastai's lr_mult).", SCHEDULE)
    head_speedup: float = setting(
        5.0, "While the body is frozen, the new head learns at --learning-rate times this.",
        SCHEDULE)
    weight_decay: float = setting(0.01, "AdamW's decoupled weight decay.", SCHEDULE)
    batch_size: int = setting(64, "Photos per training step.", SCHEDULE)
    balance: str = setting(
        "none", "What training does for classes with fewer photos than others: none; "
                "weights (each photo's loss weighted by n / (classes x its class's photos), "
                "scikit-learn's balanced class weights); or sampler (each epoch draws as many "
                "photos, with replacement, every class equally often). valid_loss stays the "
                "plain loss.", SCHEDULE)
    adapt_batchnorm: bool | None = setting(
        None, "Let BatchNorm statistics adapt to your photos, as fastai's train_bn does (the "
              "frozen epoch then back-propagates through the whole body). By default the "
              "pretrained statistics are kept (on imagewoof-2k faster and more accurate), and "
              "adapted only when training from random weights.", SCHEDULE,
        default_text="off with pretrained weights")
    frozen_stages: int | None = setting(
        None, "Once unfrozen, the body's first N feature stages (the stem and the layers "
              "that work at high resolution) keep their pretrained weights: "
              "back-propagation stops before them, so an unfrozen step takes less time "
              "(measured in benchmarks/TECHNIQUES.md). 0 trains every layer, as fastai "
              "does.", SCHEDULE,
        default_text="the stages at 1/8 of the photo's side or finer with pretrained "
                     "weights (3 for efficientnet_lite0 and resnet34); 0 from random weights")

    warmup_size: int | None = setting(
        None, "Once unfrozen, the steps of the learning rate's warm-up (the first 30%) see "
              "the photos resized to this many pixels, the rest at --item-resize: fastai's "
              "progressive resizing, within one stage. Smaller photos make those steps "
              "cheaper (measured in benchmarks/TECHNIQUES.md).", SCHEDULE,
        default_text="off")

    device: str = setting(
        "auto", "auto (CUDA, else Apple MPS, else CPU), cpu, cuda, cuda:N or mps.", HARDWARE)
    precision: str = setting(
        "auto", "auto (bf16/fp16 mixed precision where the hardware does it natively), fp32, "
                "bf16 or fp16.", HARDWARE)

    out: str | None = setting(
        None, "Run folder for the model, metrics and report.", OUTPUT,
        default_text="runs/<data>-<model>")
    onnx: bool = setting(
        True, "Also export the model to RUN/model/model.onnx at the end, checked against "
              "PyTorch, so that prediction runs in ONNX Runtime.", OUTPUT)
    overwrite: bool = setting(
        False, "Replace a run already in the run folder (kept until the new run saves its "
        "first epoch).", OUTPUT)
    track: tuple[str, ...] = setting(
        (), "Also send the run to a tracker, given once for each: tensorboard (event files in "
            "RUN/tensorboard/) or mlflow (the store of MLFLOW_TRACKING_URI, else mlflow.db "
            "beside the run folder). A tracker that fails is a warning; the run goes on.",
        OUTPUT, default_text="none")
    experiment: str | None = setting(
        None, "The MLflow experiment the run goes into.", OUTPUT,
        default_text="the data folder's name")
    checkpoint_minutes: float = setting(
        10.0, "Also save a checkpoint every this many minutes inside an epoch (one is saved "
              "at the end of every epoch, and on Ctrl-C); 0 saves only at the end of epochs. "
              "`clearclass train --resume RUN` continues from the last one.", OUTPUT)

    def __post_init__(self) -> None:
        # Imported here: augment.py needs PyTorch, which `clearclass --help` should not wait
        # for (the command line builds its options from this class).
        from clearclass.data.augment import AUGMENT_PRESETS

        for name in OLD_VALUES:
            setattr(self, name, _current_value(name, getattr(self, name), warn=True))
        if isinstance(self.threshold, numbers.Real) and not isinstance(self.threshold, bool):
            self.threshold = f"{self.threshold:g}"  # threshold=0.3 from Python
        if isinstance(self.track, (str, list)):  # one name, or a list from config.json
            self.track = (self.track,) if isinstance(self.track, str) else tuple(self.track)
        _check_types(self)
        from clearclass.tracking import check_trackers

        self.track = check_trackers(self.track)
        for name in ("data", "weights", "out"):  # paths are kept as text, for config.json
            value = getattr(self, name)
            if isinstance(value, Path):
                setattr(self, name, str(value))
        checks = [
            ("epochs", self.epochs >= 0, "must be >= 0"),
            ("freeze_epochs", self.freeze_epochs >= 0, "must be >= 0"),
            ("epochs", self.epochs + self.freeze_epochs > 0,
             "and freeze_epochs are both 0: there is nothing to train"),
            ("learning_rate", self.learning_rate > 0, "must be > 0"),
            ("body_slowdown", self.body_slowdown >= 1, "must be >= 1"),
            ("head_speedup", self.head_speedup > 0, "must be > 0"),
            ("weight_decay", self.weight_decay >= 0, "must be >= 0"),
            ("batch_size", self.batch_size >= 2, "must be >= 2"),
            ("item_resize", 16 <= self.item_resize <= 2048,
             "must be between 16 and 2048 pixels"),
            ("resize_method", self.resize_method in RESIZE_METHODS,
             f"must be one of {', '.join(RESIZE_METHODS)}"),
            ("batch_augment", self.batch_augment in AUGMENT_PRESETS,
             f"must be one of {', '.join(AUGMENT_PRESETS)}"),
            ("augment_strength", self.augment_strength >= 0, "must be >= 0"),
            ("validation_fraction", 0 < self.validation_fraction < 1,
             "must be between 0 and 1"),
            ("device", is_device_name(self.device),
             f"must be one of {', '.join(DEVICES)} (or cuda:N)"),
            ("precision", self.precision in PRECISIONS, f"must be one of {', '.join(PRECISIONS)}"),
            ("workers", self.workers is None or self.workers >= 0, "must be >= 0"),
            ("frozen_stages", self.frozen_stages is None or self.frozen_stages >= 0,
             "must be >= 0"),
            ("warmup_size", self.warmup_size is None
             or 16 <= self.warmup_size <= self.item_resize,
             f"must be between 16 and --item-resize ({self.item_resize})"),
            ("checkpoint_minutes", self.checkpoint_minutes >= 0, "must be >= 0"),
            ("experiment", self.experiment is None or bool(self.experiment.strip()),
             "must be a name, not empty"),
            ("cache", self.cache in CACHE_MODES, f"must be one of {', '.join(CACHE_MODES)}"),
            ("balance", self.balance in BALANCE_MODES,
             f"must be one of {', '.join(BALANCE_MODES)}"),
            ("task", self.task in TASK_CHOICES, f"must be one of {', '.join(TASK_CHOICES)}"),
            ("label_delimiter", is_label_delimiter(self.label_delimiter), LABEL_DELIMITER_RULE),
            ("threshold", self.threshold == "auto" or _fraction(self.threshold),
             "must be a number between 0 and 1, or auto"),
        ]
        for name, ok, problem in checks:
            if not ok:
                value = getattr(self, name)
                choices = {"balance": BALANCE_MODES, "task": TASK_CHOICES}.get(name, ())
                hint = _did_you_mean(value, choices)
                raise SettingError(name, f"{problem}; got {value!r}.{hint}")
        if self.cache_limit is not None:
            try:
                parse_size(self.cache_limit)
            except ValueError as e:
                raise SettingError("cache_limit", str(e)) from None

    @property
    def threshold_value(self) -> float | None:
        """`threshold` as a number; None for auto (tuned on the validation photos)."""
        return None if self.threshold == "auto" else float(self.threshold)

    @property
    def will_adapt_batchnorm(self) -> bool:
        """`adapt_batchnorm` resolved: pretrained statistics are kept unless asked otherwise."""
        if self.adapt_batchnorm is None:
            return not (self.pretrained or self.weights)
        return self.adapt_batchnorm

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """A config from `config.json` (older runs' setting names included)."""
        return make_config(values["data"], {k: v for k, v in values.items() if k != "data"},
                           warn_renamed=False)


NAMES = tuple(f.name for f in fields(TrainConfig))
# Which settings each function (and command) takes besides `train`, which takes them all:
# `lr_find` all but the schedule it replaces and what only a finished run writes;
# `explore` and `show_batch` how photos are split, sized and augmented.
LR_FIND_SETTINGS = tuple(n for n in NAMES if n not in (
    "epochs", "freeze_epochs", "learning_rate", "body_slowdown", "head_speedup", "onnx",
    "overwrite", "checkpoint_minutes", "frozen_stages", "warmup_size", "track", "experiment",
    "threshold"))
# What a resumed run may change: how it runs, never what it computes.
RESUME_SETTINGS = ("device", "precision", "workers", "cache", "cache_limit",
                   "checkpoint_minutes", "onnx")
EXPLORE_SETTINGS = tuple(f.name for f in fields(TrainConfig)
                         if f.metadata["group"] == PHOTOS
                         and f.name not in ("data", "cache", "cache_limit"))


def make_config(data: str | Path | TrainConfig, settings: Mapping[str, Any],
                allowed: Collection[str] | None = None, warn_renamed: bool = True,
                ) -> TrainConfig:
    """A TrainConfig from DATA (or a config) and keyword settings that override it.

    Unknown settings are an error that suggests the closest names; renamed ones are taken
    under their new name. `allowed` limits which settings a function accepts.
    """
    settings = dict(settings)
    for old, new in RENAMED.items():
        if old in settings:
            if new in settings:
                raise SettingError(old, f"is the old name of {new}; give only {new}.")
            if warn_renamed:
                warnings.warn(f"The setting {old} is now called {new}.", DeprecationWarning,
                              stacklevel=3)
            settings[new] = settings.pop(old)
    for name in OLD_VALUES:
        if name in settings:
            settings[name] = _current_value(name, settings[name], warn=warn_renamed)
    known = allowed if allowed is not None else NAMES
    for name in settings:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            where = "" if allowed is None else " here"
            raise SettingError(name, f"is not a setting{where}.{hint} Settings: "
                                     f"{', '.join(known)}.")
    if isinstance(data, TrainConfig):
        return dataclasses.replace(data, **settings)
    if "data" in settings:
        raise SettingError("data", "was given twice.")
    return TrainConfig(data=data, **settings)


def _did_you_mean(value: Any, choices: Collection[str]) -> str:
    """' Did you mean X?' for a value that looks like a misspelt choice; '' otherwise."""
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6)
    return f" Did you mean {close[0]}?" if close else ""


def _current_value(name: str, value: Any, warn: bool) -> Any:
    """`value` of setting `name`, an old one (OLD_VALUES) turned into its current form."""
    for old, new in OLD_VALUES[name].items():
        if type(value) is type(old) and value == old:  # True is not 1 here
            if warn:
                warnings.warn(f"{name}={old!r} is now {name}={new!r}.", DeprecationWarning,
                              stacklevel=4)
            return new
    return value


@functools.cache
def setting_types() -> dict[str, Any]:
    """Each setting's type (`int`, `str | None`, ...), read once from the annotations."""
    return typing.get_type_hints(TrainConfig)


def default_text(name: str) -> str:
    """A setting's default as the README and --help show it."""
    f = {f.name: f for f in fields(TrainConfig)}[name]
    if f.metadata["default_text"]:
        return f.metadata["default_text"]
    if isinstance(f.default, bool):
        return "on" if f.default else "off"
    if isinstance(f.default, float):
        return f"{f.default:g}"
    return str(f.default)


def _fraction(text: str) -> bool:
    try:
        return 0 < float(text) < 1
    except ValueError:
        return False


def _check_types(config: TrainConfig) -> None:
    """Wrong types fail here, with the setting's name, not deep inside training."""
    hints = setting_types()
    for f in fields(config):
        value, expected = getattr(config, f.name), hints[f.name]
        if typing.get_origin(expected) is tuple:  # names, such as track's
            if not (isinstance(value, tuple) and all(isinstance(v, str) for v in value)):
                raise SettingError(f.name, f"must be a list of names; got {value!r}.")
            continue
        types = typing.get_args(expected) or (expected,)
        if not any(_is(value, t) for t in types):
            names = " or ".join("None" if t is type(None) else t.__name__ for t in types)
            raise SettingError(f.name, f"must be {names}; got {value!r} "
                                       f"({type(value).__name__}).")


def _is(value: Any, kind: type) -> bool:
    if kind is type(None):
        return value is None
    if isinstance(value, bool):
        return kind is bool
    if kind is float:  # 1 means 1.0; numpy numbers are welcome
        return isinstance(value, numbers.Real)
    if kind is int:
        return isinstance(value, numbers.Integral)
    if kind is str:
        return isinstance(value, (str, Path))
    return isinstance(value, kind)
