"""The model bundle: a folder with model.safetensors, model.json, and maybe model.onnx.

`model.safetensors` holds the weights as plain tensors and `model.json` says what they
mean: architecture, classes (id and display name) and preprocessing (size, resize method,
mean, std). Nothing is pickled, so loading a bundle cannot run code. Reading `model.json`
needs neither PyTorch nor timm, so prediction with ONNX Runtime runs without the training
stack; `save_bundle` and `load_bundle` import PyTorch only when called.

Each file is written to a temp file and renamed; `model.json` is written last and records
the weights' SHA-256, so a crash between the two renames is detected on load instead of
pairing new weights with old labels.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearclass import __version__, fileio
from clearclass.errors import ModelFileError

if TYPE_CHECKING:
    from torch import nn

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


def save_bundle(model: nn.Module, info: ModelInfo, folder: str | Path) -> Path:
    """Write a model and what it means as a bundle folder; returns the folder.

    Example:
        model, info = load_bundle("runs/dogs/model")
        save_bundle(model, info, "runs/dogs-copy/model")
    """
    import timm
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    model = getattr(model, "module", model)  # DistributedDataParallel
    model = getattr(model, "_orig_mod", model)  # torch.compile
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    weights = folder / WEIGHTS_FILE
    fileio.atomic_write(weights, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    versions = {"timm": timm.__version__, "torch": torch.__version__.split("+")[0]}
    fileio.write_json(folder / INFO_FILE, info.to_json(sha256(weights), versions))
    onnx_file = folder / ONNX_FILE
    if onnx_file.exists():
        onnx_file.unlink()  # it would describe the previous weights
    return folder


def load_bundle(path: str | Path) -> tuple[nn.Module, ModelInfo]:
    """Read a bundle folder (or its model.json) into an eval-mode PyTorch model on the CPU.

    Example:
        model, info = load_bundle("runs/dogs/model")
        print(info.architecture, len(info.class_ids))
    """
    from safetensors.torch import load_file

    from clearclass.model import create_model

    folder = bundle_folder(path)
    info = read_info(folder)
    weights = folder / WEIGHTS_FILE
    expected = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))["weights"]["sha256"]
    if sha256(weights) != expected:
        raise ModelFileError(
            f"{weights} does not match {folder / INFO_FILE} (checksum differs): the bundle was "
            "only partly written or was edited. Re-export the model."
        )
    model, _ = create_model(info.architecture, len(info.class_ids), pretrained=False)
    try:
        model.load_state_dict(load_file(str(weights), device="cpu"))
    except RuntimeError as e:
        raise ModelFileError(f"{weights} does not fit {info.architecture}: {e}") from None
    return model.eval(), info
