"""The settings of a training run, one field per `clearclass train` option."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from clearclass.data.augment import AUGMENT_PRESETS
from clearclass.data.decode import RESIZE_METHODS
from clearclass.device import DEVICES, PRECISIONS
from clearclass.errors import ClearclassError


@dataclass
class TrainConfig:
    """How to fine-tune: defaults follow fastai's `fine_tune` and `aug_transforms`."""

    data: str  # folder of class folders, train/valid folders, or a CSV path,label[,is_valid]
    out: str | None = None  # run folder; default runs/<data>-<model>
    model: str = "resnet34"  # any timm architecture
    weights: str | None = None  # .pth/.safetensors file with pretrained weights
    pretrained: bool = True  # False: random initial weights
    epochs: int = 1  # epochs with the whole model trainable
    freeze_epochs: int = 1  # epochs before that with the pretrained body frozen
    train_bn: bool | None = None  # BatchNorm statistics adapt (as fastai); None: only when
    #                               training from random weights (no pretrained statistics)
    base_lr: float = 2e-3  # peak learning rate (fastai's); halved once unfrozen
    head_lr_mult: float = 5.0  # while frozen, the new head learns at base_lr x this
    lr_mult: float = 100.0  # once unfrozen, the body learns lr_mult times slower than the head
    weight_decay: float = 0.01  # AdamW decoupled weight decay
    batch_size: int = 64  # photos per step
    item_resize: int = 224  # side of the square photos the model sees, in pixels
    resize_method: str = "crop"  # crop | squish | pad
    batch_augment: str = "standard"  # standard (= fastai aug_transforms()) | none
    augment_strength: float = 1.0  # multiplies rotation, warp and lighting (fastai's mult)
    valid_pct: float = 0.2  # share of each class held out, when DATA has no split
    seed: int = 42  # split, initial head, order and augmentation
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    workers: int | None = None  # decoding processes; default one per core
    cache: bool = True  # keep decoded photos on disk for the next run (data/cache.py)
    onnx: bool = True  # also write model.onnx at the end, for prediction without PyTorch
    overwrite: bool = False  # replace a model already in the run folder

    def __post_init__(self) -> None:
        self.data = str(self.data)
        checks = [
            (self.epochs >= 0, f"epochs must be >= 0; got {self.epochs}"),
            (self.freeze_epochs >= 0, f"freeze_epochs must be >= 0; got {self.freeze_epochs}"),
            (self.epochs + self.freeze_epochs > 0, "epochs and freeze_epochs are both 0"),
            (self.base_lr > 0, f"base_lr must be > 0; got {self.base_lr}"),
            (self.lr_mult >= 1, f"lr_mult must be >= 1; got {self.lr_mult}"),
            (self.head_lr_mult > 0, f"head_lr_mult must be > 0; got {self.head_lr_mult}"),
            (self.batch_size >= 2, f"batch_size must be >= 2; got {self.batch_size}"),
            (16 <= self.item_resize <= 2048,
             f"item_resize must be between 16 and 2048 pixels; got {self.item_resize}"),
            (self.resize_method in RESIZE_METHODS,
             f"resize_method must be one of {', '.join(RESIZE_METHODS)}; "
             f"got {self.resize_method!r}"),
            (self.batch_augment in AUGMENT_PRESETS,
             f"batch_augment must be one of {', '.join(AUGMENT_PRESETS)}; "
             f"got {self.batch_augment!r}"),
            (self.augment_strength >= 0,
             f"augment_strength must be >= 0; got {self.augment_strength}"),
            (0 < self.valid_pct < 1, f"valid_pct must be between 0 and 1; got {self.valid_pct}"),
            (self.device.split(":")[0] in DEVICES,
             f"device must be one of {', '.join(DEVICES)}; got {self.device!r}"),
            (self.precision in PRECISIONS,
             f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}"),
            (self.workers is None or self.workers >= 0,
             f"workers must be >= 0; got {self.workers}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ClearclassError(message + ".")

    @property
    def adapt_norm_statistics(self) -> bool:
        """train_bn, resolved: pretrained statistics are kept unless asked otherwise."""
        if self.train_bn is None:
            return not (self.pretrained or self.weights)
        return self.train_bn

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ClearclassError(f"Unknown training setting(s): {', '.join(unknown)}.")
        return cls(**values)
