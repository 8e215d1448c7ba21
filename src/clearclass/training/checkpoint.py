"""A checkpoint: what a run needs to continue exactly where it stopped.

RUN/checkpoint/ holds two files, written with the run's other files as one change of the
run folder (`fileio.FolderChange`), so a checkpoint is always whole and always agrees with
metrics.csv:
- `state.safetensors`: the model's weights and buffers (`model.NAME`) and the optimizer's
  tensors for each parameter (`optimizer.INDEX.NAME`: AdamW's moments and step);
- `state.json`: where training stood (epochs finished, batches done of the next epoch and
  the loss summed over them), the stage the optimizer belongs to, the optimizer's
  hyper-parameters, the learning-rate scheduler's and the gradient scaler's state, and the
  model's description (classes, preprocessing) to rebuild it.

A resume trusts nothing it has not checked: `state.json` records the SHA-256 of
`state.safetensors` and of the run files a resume reads besides (RECORDED_FILES: the
settings, the split, the epochs' metrics) as they were saved, and one of its own content;
`read_checkpoint` refuses a checkpoint whose files were changed since, naming the file.

No random-number state is stored: every random draw of a step (augmentation, dropout) is
seeded from (seed, rank, epoch, step), and the order of an epoch's batches from (seed,
epoch), so the position alone restores them on any number of processes.

Never a pickle: safetensors and JSON only (PyTorch's own `torch.save` would pickle the
optimizer's state, and `torch.load` of a pickle can run code).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from clearclass import fileio
from clearclass.bundle import ModelInfo, sha256
from clearclass.errors import RunError

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
TENSORS_FILE = "state.safetensors"
FORMAT_VERSION = 1
# The run's files a resume reads besides the checkpoint, recorded (SHA-256) when it is saved.
RECORDED_FILES = ("config.json", "split.csv", "metrics.csv")
CHECKSUMS, OWN_CHECKSUM = "checksums", "checksum"  # state.json's keys for the records


@dataclass
class Position:
    """Where training stands: `epochs_done` whole epochs, then `step` batches of the next.

    `loss_sum` and `count` are the training loss summed over those `step` batches and the
    photos in them (this process's), so the resumed epoch reports the same mean loss;
    `seconds` is the time already spent on that epoch.
    """

    epochs_done: int = 0
    step: int = 0
    loss_sum: float = 0.0
    count: int = 0
    seconds: float = 0.0


@dataclass
class Checkpoint:
    """A checkpoint read back: its position, stage and model description, and the tensors."""

    folder: Path
    position: Position
    stage: str | None  # the stage ("frozen"/"unfrozen") the optimizer state belongs to
    run_id: str
    info: ModelInfo
    state: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    def load_model(self, model: nn.Module) -> None:
        weights = {k[len("model."):]: v for k, v in self.tensors.items()
                   if k.startswith("model.")}
        model.load_state_dict(weights)

    def load_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        saved = self.state["optimizer"]
        per_param: dict[int, dict[str, Any]] = {}
        for key, value in self.tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                per_param.setdefault(int(index), {})[name] = value
        for index, scalars in saved["scalars"].items():
            per_param.setdefault(int(index), {}).update(scalars)
        groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g
                  for g in saved["param_groups"]]
        optimizer.load_state_dict({"state": per_param, "param_groups": groups})

    def load_scheduler(self, scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
        scheduler.load_state_dict(self.state["scheduler"])

    def load_scaler(self, scaler: torch.amp.GradScaler | None) -> None:
        if scaler is not None and self.state.get("scaler"):
            scaler.load_state_dict(self.state["scaler"])


def write_checkpoint(folder: Path, *, model: nn.Module, info: ModelInfo, run_id: str,
                     position: Position, stage: str | None,
                     optimizer: torch.optim.Optimizer | None = None,
                     scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                     scaler: torch.amp.GradScaler | None = None) -> None:
    """Write a checkpoint into `folder` (inside a run folder change: see module doc).

    Each file is written under a temporary name and renamed, never in place: `folder` may
    hold hard links to the previous checkpoint's files.
    """
    model = getattr(model, "module", model)  # DistributedDataParallel
    tensors = {f"model.{k}": v.detach().to("cpu").contiguous()
               for k, v in model.state_dict().items()}
    state: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "run_id": run_id,
        "position": asdict(position),
        "stage": stage,
        "model": info.to_json(weights_sha256="", versions={}),
        "random_state": "derived from the seed, process rank, epoch and step",
    }
    if optimizer is not None:
        saved = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for index, values in saved["state"].items():
            for name, value in values.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer.{index}.{name}"] = value.detach().to("cpu").contiguous()
                else:
                    scalars.setdefault(str(index), {})[name] = value
        state["optimizer"] = {"param_groups": saved["param_groups"], "scalars": scalars}
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    folder.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write(folder / TENSORS_FILE, lambda tmp: save_file(tensors, str(tmp)))
    # The run's files as they are now, in the change this checkpoint is written into.
    state[CHECKSUMS] = {TENSORS_FILE: sha256(folder / TENSORS_FILE)}
    for name in RECORDED_FILES:
        if (folder.parent / name).is_file():
            state[CHECKSUMS][name] = sha256(folder.parent / name)
    state = json.loads(fileio.json_text(state))  # as it will read back: keys as text, lists
    state[OWN_CHECKSUM] = _own_checksum(state)
    fileio.write_json(folder / STATE_FILE, state)


def _own_checksum(state: dict[str, Any]) -> str:
    """The SHA-256 of state.json's content as read (keys sorted, its own checksum left out)."""
    content = {k: v for k, v in state.items() if k != OWN_CHECKSUM}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _changed_file(state: dict[str, Any], folder: Path) -> Path | None:
    """The first file of the checkpoint (state.json included) or of the run that differs
    from what state.json recorded when it was saved; None if none does, or if the
    checkpoint was saved before the records were kept."""
    if OWN_CHECKSUM in state and state[OWN_CHECKSUM] != _own_checksum(state):
        return folder / STATE_FILE
    for name, recorded in state.get(CHECKSUMS, {}).items():
        path = (folder if name == TENSORS_FILE else folder.parent) / name
        if not path.is_file() or sha256(path) != recorded:
            return path
    return None


def read_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The run's checkpoint, or None when it has none (finished, or from an older version)."""
    folder = fileio.settled(run_dir) / CHECKPOINT_DIR
    if not (folder / STATE_FILE).exists():
        return None
    try:
        state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        if state.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format version {state.get('format_version')!r}, this clearclass "
                             f"reads {FORMAT_VERSION}")
        changed = _changed_file(state, folder)
        if changed is not None:
            record = "it" if changed.name == STATE_FILE else folder / STATE_FILE
            raise RunError.edited(changed, record, run_dir)
        tensors = load_file(str(folder / TENSORS_FILE))
        info = ModelInfo.from_json({**state["model"], "weights": {
            "file": TENSORS_FILE, "sha256": "0" * 64}}, folder / STATE_FILE)
        return Checkpoint(folder, Position(**state["position"]), state.get("stage"),
                          state["run_id"], info, state, tensors)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise RunError(f"The checkpoint in {folder} cannot be read ({type(e).__name__}: {e}). "
                       f"RUN/model holds the last finished epoch; to train again, start a new "
                       "run (--overwrite).") from None
