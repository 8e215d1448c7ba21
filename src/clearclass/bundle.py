"""The model bundle format: a folder with model.safetensors, model.json, maybe model.onnx.

`model.json` says what the weights mean: architecture, classes (id and display name) and
preprocessing (size, resize method, mean, std). Reading it needs neither PyTorch nor timm,
so prediction with ONNX Runtime can run without the training stack. Writing and loading
the weights is in `export.py`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clearclass import __version__
from clearclass.errors import ModelFileError

FORMAT = "clearclass-model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
INFO_FILE = "model.json"
ONNX_FILE = "model.onnx"
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".bin")


@dataclass
class ModelInfo:
    """Everything needed to turn a photo into the model's input and its output into labels."""

    architecture: str
    class_ids: list[str]
    class_names: list[str]
    size: int
    resize_method: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    training: dict[str, Any] = field(default_factory=dict)

    def to_json(self, weights_sha256: str, versions: dict[str, str]) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "architecture": self.architecture,
            "num_classes": len(self.class_ids),
            "classes": [{"id": i, "name": n} for i, n in zip(self.class_ids, self.class_names)],
            "preprocessing": {
                "size": self.size,
                "resize_method": self.resize_method,
                "mean": list(self.mean),
                "std": list(self.std),
                "input": "RGB, EXIF orientation applied, pixels / 255, then (x - mean) / std",
            },
            "weights": {"file": WEIGHTS_FILE, "sha256": weights_sha256},
            "training": self.training,
            "versions": {"clearclass": __version__, **versions},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], source: Path) -> ModelInfo:
        if data.get("format") != FORMAT:
            raise ModelFileError(f"{source} is not a clearclass model description.")
        if data.get("format_version", 0) > FORMAT_VERSION:
            raise ModelFileError(
                f"{source} was written by a newer clearclass (format version "
                f"{data['format_version']}); upgrade clearclass to read it."
            )
        try:
            pre = data["preprocessing"]
            return cls(
                architecture=data["architecture"],
                class_ids=[c["id"] for c in data["classes"]],
                class_names=[c["name"] for c in data["classes"]],
                size=int(pre["size"]),
                resize_method=pre["resize_method"],
                mean=tuple(pre["mean"]),
                std=tuple(pre["std"]),
                training=data.get("training", {}),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ModelFileError(f"{source} is missing or has a bad field: {e}.") from None


def bundle_folder(path: str | Path) -> Path:
    """The bundle folder a user means by PATH, refusing pickles with the reason."""
    path = Path(path).expanduser()
    if path.suffix.lower() in PICKLE_SUFFIXES and path.is_file():
        raise ModelFileError(
            f"{path} is a pickle file (fastai's export.pkl and torch.save files are). Loading "
            "a pickle runs whatever code it contains, so clearclass never does. Give the "
            "folder of a clearclass model (model.safetensors + model.json), or convert the "
            "weights with `clearclass train --weights` from a .safetensors file."
        )
    if path.is_file() and path.name in (INFO_FILE, WEIGHTS_FILE, ONNX_FILE):
        path = path.parent
    if path.is_dir() and not (path / INFO_FILE).exists() and (path / "model" / INFO_FILE).exists():
        path = path / "model"  # a run folder
    if not (path / INFO_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        raise ModelFileError(
            f"{path} is not a clearclass model: expected a folder with {WEIGHTS_FILE} and "
            f"{INFO_FILE}, such as RUN/model written by `clearclass train`."
        )
    return path


def read_info(folder: Path) -> ModelInfo:
    source = folder / INFO_FILE
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ModelFileError(f"Could not read {source}: {e}.") from None
    return ModelInfo.from_json(data, source)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
