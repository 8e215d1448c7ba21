"""The trained network's features for every photo of a run, computed once and kept.

Small heads on these vectors train in seconds, so cross-validation and learning curves cost
one pass over the photos instead of a fine-tune per fold. The vectors are what the network's
classifier reads (timm's `forward_head(..., pre_logits=True)`: pooled, before the last
linear layer), computed without gradients on a BatchNorm-folded copy.

They are kept in RUN/advice/features.safetensors with the SHA-256 of the weights and of
split.csv they came from; a later call reuses them only while both still match.

A multi-label run's photos have a set of labels each: their `targets` are multi-hot rows
and the model's own `probabilities` its sigmoids, one per label.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clearclass import fileio
from clearclass.bundle import WEIGHTS_FILE
from clearclass.data.sources import SPLIT_CHECKSUM
from clearclass.progress import bar, say
from clearclass.run_folder import RunFolder

FEATURES_FILE = "features.safetensors"
BATCH_SIZE = 64


@dataclass
class RunFeatures:
    """One row per photo of the run that could be read, in split.csv's order."""

    paths: list[str]
    # The class index of each photo, in the model's class order; a multi-label run's:
    # photos x labels, 1 where the photo has the label.
    targets: np.ndarray
    is_valid: np.ndarray  # bool: a validation photo
    features: np.ndarray  # float32, photos x the width the classifier reads
    class_ids: list[str]
    # float32, photos x classes: the trained model's own probabilities (its classifier on
    # the features; multi-label: each label's sigmoid), in sample for the training photos.
    probabilities: np.ndarray
    task: str = "single"  # "multi": a set of labels per photo (task.py)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def is_multi_label(self) -> bool:
        return self.task == "multi"


def run_features(run: object, device: str = "auto") -> RunFeatures:
    """The features of every photo of `run` (a run folder, or what `train` returns): read
    from RUN/advice/ when they were computed for the same weights and split, else computed
    (one forward pass over the photos) and kept there.

    Example:
        found = run_features("runs/dogs")
        print(found.features.shape, found.is_valid.sum())
    """
    folder = RunFolder.open(run, needs_model=True)
    path, key = _kept_at(folder)
    kept = _read(path, key)
    if kept is not None:
        return kept
    found = _compute(folder, device)
    _write(path, found, key)
    say(f"Features of {len(found)} photos kept in {path}.")
    return found


def kept_features(run: object) -> RunFeatures | None:
    """The features RUN/advice/ keeps for the run's present weights and split, or None
    (none kept, or kept for other weights or another split): never a forward pass.

    Example:
        found = kept_features("runs/dogs")  # None until run_features("runs/dogs")
    """
    return _read(*_kept_at(RunFolder.open(run, needs_model=True)))


def _kept_at(folder: RunFolder) -> tuple[Path, dict[str, str]]:
    """Where the run's features are kept, and the checksums they must have been made for."""
    info = folder.model_info()
    key = {"weights_sha256": info.checksums[WEIGHTS_FILE],
           "split_sha256": str(folder.record().get(SPLIT_CHECKSUM))}
    return folder.path / "advice" / FEATURES_FILE, key


def _compute(folder: RunFolder, device: str) -> RunFeatures:
    import torch

    from clearclass.bundle import load_bundle
    from clearclass.data.augment import normalize
    from clearclass.data.loader import PhotoBatches
    from clearclass.data.reading import read_photos
    from clearclass.device import select
    from clearclass.model import fold_batchnorm

    model, info = load_bundle(folder.model_dir)
    photo_set = folder.split(info.class_ids)
    # A photo that can no longer be read has no row (advice writes no skipped.csv).
    photos = read_photos(photo_set, info.item_resize, info.resize_method, cache="disk",
                         listed_in=None)
    kept = photos.photo_set.photos
    targets = photos.photo_set.targets()  # in info.class_ids' order: the split's
    multi = info.task == "multi"
    compute = select(device)
    net = fold_batchnorm(model).to(compute.device).eval()
    batches = PhotoBatches(photos.pixels, targets, info.item_resize,
                           info.resize_method, BATCH_SIZE, training=False)
    classifier = net.get_classifier()  # timm: the last layer, what reads pre_logits
    rows, chances = [], []
    with torch.no_grad(), bar("computing features", len(batches)) as progress:
        for images, _ in batches:
            x = normalize(images.to(compute.device), info.mean, info.std)
            with compute.autocast:
                pooled = net.forward_head(net.forward_features(x), pre_logits=True)
            pooled = pooled.float()
            rows.append(pooled.cpu().numpy())
            logits = classifier(pooled)
            chances.append((torch.sigmoid(logits) if multi else torch.softmax(logits, dim=1))
                           .cpu().numpy())
            progress.advance()
    width, classes = (rows[0].shape[1] if rows else 0), len(info.class_ids)
    return RunFeatures([str(p.path) for p in kept], targets,
                       np.array([p.is_valid for p in kept], dtype=bool),
                       np.concatenate(rows) if rows else np.zeros((0, width), np.float32),
                       list(info.class_ids),
                       np.concatenate(chances) if chances else np.zeros((0, classes), np.float32),
                       info.task)


def _write(path: Path, found: RunFeatures, key: dict[str, str]) -> None:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"features": np.ascontiguousarray(found.features, dtype=np.float32),
               "probabilities": np.ascontiguousarray(found.probabilities, dtype=np.float32),
               "targets": found.targets, "is_valid": found.is_valid.astype(np.uint8)}
    metadata = {**key, "paths": json.dumps(found.paths),
                "class_ids": json.dumps(found.class_ids), "task": found.task}
    fileio.atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _read(path: Path, key: dict[str, str]) -> RunFeatures | None:
    """The kept features, or None when there are none, they are for other weights or
    another split, or the file is damaged (they are computed again: nothing is lost)."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            if any(metadata.get(name) != value for name, value in key.items()):
                return None
            features, targets = f.get_tensor("features"), f.get_tensor("targets")
            is_valid = f.get_tensor("is_valid").astype(bool)
            probabilities = f.get_tensor("probabilities")
        paths, class_ids = json.loads(metadata["paths"]), json.loads(metadata["class_ids"])
    except Exception:  # noqa: BLE001  (any damage: compute them again)
        return None
    task = metadata.get("task", "single")  # kept before multi-label runs: single
    rows = (len(class_ids),) if task == "multi" else ()
    if not (len(paths) == len(features) == len(targets) == len(is_valid)
            == len(probabilities)) or probabilities.shape[1:] != (len(class_ids),) \
            or targets.shape[1:] != rows or task not in ("single", "multi"):
        return None
    return RunFeatures(paths, targets, is_valid, features, class_ids, probabilities, task)
