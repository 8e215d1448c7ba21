"""The model bundle: a folder with model.safetensors, model.json, and maybe model.onnx.

`model.safetensors` holds the weights as plain tensors and `model.json` says what they
mean: architecture, task, classes (id and display name; a multi-label model's threshold for
each) and preprocessing (size, resize method, mean, std). Nothing is pickled, so loading a
bundle cannot run code. Reading `model.json` needs neither PyTorch nor timm, so prediction
with ONNX Runtime runs without the training stack; `save_bundle` and `load_bundle` import
PyTorch only when called.

A bundle changes as a unit: `save_bundle` writes the new files into a folder beside the
bundle and swaps it in (`fileio.changing`), so a process killed at any moment leaves the
previous bundle or the new one. `model.json` records the weights' SHA-256, so a file
damaged or edited afterwards is detected on load instead of pairing weights with the wrong
labels.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import clearclass
from clearclass import fileio
from clearclass.data.decode import RESIZE_METHODS
from clearclass.errors import ModelFileError
from clearclass.hub_download import hub_snapshot, is_hub_reference

if TYPE_CHECKING:
    from torch import nn

FORMAT = "clearclass-model"
# 2: a multi-label model (its "task" and thresholds), which a reader of version 1 would
# take for a softmax classifier; single-label models are still written as 1, which every
# clearclass reads.
FORMAT_VERSION = 2
WEIGHTS_FILE = "model.safetensors"
INFO_FILE = "model.json"
ONNX_FILE = "model.onnx"
BUNDLE_FILES = (WEIGHTS_FILE, INFO_FILE, ONNX_FILE)
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".bin")


@dataclass
class ModelInfo:
    """Everything needed to turn a photo into the model's input and its output into labels."""

    architecture: str
    class_ids: list[str]
    class_names: list[str]
    item_resize: int  # pixels: the side of the square input (model.json's preprocessing.size)
    resize_method: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    training: dict[str, Any] = field(default_factory=dict)
    # "single" (softmax, one class per photo) or "multi" (sigmoid, a set of labels: each
    # label predicted when its probability reaches its threshold). task.task_named.
    task: str = "single"
    thresholds: list[float] | None = None  # multi: one per class
    # The SHA-256 of each file model.json vouches for, by name (model.safetensors, and
    # model.onnx once exported): read from model.json, empty for a model not saved yet.
    checksums: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def size(self) -> int:
        """The input side in pixels; kept for code written before `item_resize`."""
        return self.item_resize

    def decision(self):
        """The model's task (task.py), deciding with its thresholds."""
        from clearclass.task import task_named

        return task_named(self.task, self.thresholds)

    def to_json(self, weights_sha256: str, versions: dict[str, str]) -> dict[str, Any]:
        classes = [{"id": i, "name": n} for i, n in zip(self.class_ids, self.class_names)]
        if self.task == "multi":
            for entry, threshold in zip(classes, self.thresholds or ()):
                entry["threshold"] = round(float(threshold), 6)
        return {
            "format": FORMAT,
            "format_version": 2 if self.task == "multi" else 1,
            "architecture": self.architecture,
            "task": self.task,
            "num_classes": len(self.class_ids),
            "classes": classes,
            "preprocessing": {
                "size": self.item_resize,
                "resize_method": self.resize_method,
                "mean": list(self.mean),
                "std": list(self.std),
                "input": "RGB, EXIF orientation applied, pixels / 255, then (x - mean) / std",
            },
            "weights": {"file": WEIGHTS_FILE, "sha256": weights_sha256},
            "training": self.training,
            "versions": {"clearclass": clearclass.__version__, **versions},
        }

    @classmethod
    def from_json(cls, data: Any, source: Path) -> ModelInfo:
        """model.json's content (`source` names it in messages), checked field by field.

        Any JSON value is accepted as `data`; a ModelFileError names the first problem.
        """
        return _JsonChecker(source).model_info(data)


MAX_SIZE = 10_000  # pixels: a larger input side in model.json is an edit, not a model
_KIND_NAMES = {dict: "an object", list: "a list", str: "a string", int: "a whole number"}


class _JsonChecker:
    """Reads model.json's fields; each problem is a ModelFileError that names the file."""

    def __init__(self, source: Path):
        self.source = source

    def fail(self, problem: str) -> ModelFileError:
        return ModelFileError(f"{self.source} is not a valid model description: {problem}. "
                              "Restore the file from a copy, or train the model again.")

    def get(self, data: dict, key: str, kind: type, where: str = "") -> Any:
        if key not in data:
            raise self.fail(f"it has no '{where}{key}'")
        value = data[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(f"'{where}{key}' must be {_KIND_NAMES[kind]}, not "
                            f"{_json_kind(value)}")
        return value

    def checksum(self, data: dict, where: str) -> str:
        value = self.get(data, "sha256", str, where)
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise self.fail(f"'{where}sha256' must be a SHA-256 (64 hexadecimal digits)")
        return value

    def rgb(self, pre: dict, key: str, above_zero: bool) -> tuple[float, float, float]:
        values = self.get(pre, key, list, "preprocessing.")
        if len(values) != 3 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in values):
            raise self.fail(f"'preprocessing.{key}' must be 3 numbers (red, green, blue), "
                            f"not {_json_kind(values)}")
        if above_zero and min(values) <= 0:
            raise self.fail(f"'preprocessing.{key}' must be 3 numbers above 0, not "
                            f"{_json_kind(values)}")
        return (float(values[0]), float(values[1]), float(values[2]))

    def model_info(self, data: Any) -> ModelInfo:
        if not isinstance(data, dict):
            kind = "a list" if isinstance(data, list) else _json_kind(data)
            raise self.fail(f"it holds {kind}, where an object with format, classes and "
                            "preprocessing belongs")
        if data.get("format") != FORMAT:
            found = _json_kind(data["format"]) if "format" in data else "missing"
            raise ModelFileError(
                f"{self.source} is not a clearclass model description (its 'format' is "
                f"{found}, not \"{FORMAT}\"). Give the folder of a model written by "
                "`clearclass train`.")
        version = self.get(data, "format_version", int)
        if version > FORMAT_VERSION:
            raise ModelFileError(
                f"{self.source} was written by a newer clearclass (format version "
                f"{_json_kind(version)}; this one reads {FORMAT_VERSION}); upgrade clearclass "
                "to read it.")
        if version < 1:
            raise self.fail(f"'format_version' must be 1 to {FORMAT_VERSION}, not "
                            f"{_json_kind(version)}")
        architecture = self.get(data, "architecture", str)
        if not architecture.strip():
            raise self.fail("'architecture' is empty")
        classes = self.get(data, "classes", list)
        if not classes:
            raise self.fail("'classes' is empty")
        ids, names = [], []
        for n, entry in enumerate(classes):
            if not isinstance(entry, dict):
                raise self.fail(f"'classes[{n}]' must be an object with an id and a name, not "
                                f"{_json_kind(entry)}")
            ids.append(self.get(entry, "id", str, f"classes[{n}]."))
            names.append(self.get(entry, "name", str, f"classes[{n}]."))
            if not ids[-1]:
                raise self.fail(f"'classes[{n}].id' is empty")
        seen: set[str] = set()
        for class_id in ids:
            if class_id in seen:
                shown = json.dumps(class_id, ensure_ascii=False)[:40]
                raise self.fail(f"the class id {shown} appears twice in 'classes'")
            seen.add(class_id)
        num_classes = self.get(data, "num_classes", int)
        if num_classes != len(classes):
            raise self.fail(f"'num_classes' is {_json_kind(num_classes)} but 'classes' "
                            f"lists {len(classes)}")
        pre = self.get(data, "preprocessing", dict)
        size = self.get(pre, "size", int, "preprocessing.")
        if not 1 <= size <= MAX_SIZE:
            raise self.fail(f"'preprocessing.size' must be 1 to {MAX_SIZE} pixels, not "
                            f"{_json_kind(size)}")
        method = self.get(pre, "resize_method", str, "preprocessing.")
        if method not in RESIZE_METHODS:
            raise self.fail(f"'preprocessing.resize_method' must be one of "
                            f"{', '.join(RESIZE_METHODS)}, not {_json_kind(method)}")
        mean = self.rgb(pre, "mean", above_zero=False)
        std = self.rgb(pre, "std", above_zero=True)
        checksums = {WEIGHTS_FILE: self.checksum(self.get(data, "weights", dict), "weights.")}
        if "onnx" in data:
            onnx = self.get(data, "onnx", dict)
            if onnx.get("file", ONNX_FILE) != ONNX_FILE:
                raise self.fail(f"'onnx.file' must be \"{ONNX_FILE}\"")
            checksums[ONNX_FILE] = self.checksum(onnx, "onnx.")
        training = self.get(data, "training", dict) if "training" in data else {}
        task = self.get(data, "task", str) if "task" in data else "single"  # older bundles
        thresholds = None
        if task == "multi":
            thresholds = [self.threshold(entry, n) for n, entry in enumerate(classes)]
        elif task != "single":
            raise self.fail(f"'task' must be \"single\" or \"multi\", not {_json_kind(task)}")
        return ModelInfo(architecture=architecture, class_ids=ids, class_names=names,
                         item_resize=size, resize_method=method, mean=mean, std=std,
                         training=training, task=task, thresholds=thresholds,
                         checksums=checksums)

    def threshold(self, entry: dict, n: int) -> float:
        if "threshold" not in entry:
            raise self.fail(f"it has no 'classes[{n}].threshold' (a multi-label model has "
                            "one for every class)")
        value = entry["threshold"]
        # NaN fails the range too: every comparison with it is false.
        if (not isinstance(value, (int, float)) or isinstance(value, bool)
                or not 0 <= value <= 1):
            raise self.fail(f"'classes[{n}].threshold' must be a number from 0 to 1 (a "
                            f"multi-label model's), not {_json_kind(value)}")
        return float(value)


def _json_kind(value: Any) -> str:
    """A JSON value as a message shows it: 'a list', 'null', 'the string "x"' (shortened)."""
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return "the string " + (text if len(text) <= 40 else text[:36] + '..."')
    if isinstance(value, dict):
        return "an object"
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):  # not JSON, or an integer too long to print
        text = type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def bundle_folder(path: str | Path) -> Path:
    """The bundle folder a user means by PATH, refusing pickles with the reason.

    `hf-hub:OWNER/NAME` (a str) is a model on the Hugging Face Hub: its bundle files are
    fetched once into the Hugging Face cache, and that folder is the bundle
    (`hub_download.hub_snapshot`).
    """
    if is_hub_reference(path):
        path = hub_snapshot(str(path), BUNDLE_FILES)
    path = fileio.settled(Path(path).expanduser())
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
    """The bundle's model.json, checked (`ModelInfo.from_json`); ModelFileError otherwise."""
    source = Path(folder) / INFO_FILE
    return ModelInfo.from_json(_read_info_json(source), source)


def _read_info_json(source: Path) -> Any:
    """model.json's JSON value, unchecked; a ModelFileError naming it when it is not JSON."""
    try:
        text = source.read_bytes().decode("utf-8-sig")  # an editor may have added a BOM
        return json.loads(text)
    except OSError as e:
        raise ModelFileError(f"Could not read {source}: {e.strerror or e}.") from None
    except UnicodeDecodeError:
        raise ModelFileError(f"{source} is not text (it is not UTF-8), so not a model "
                             "description. Restore the file from a copy, or train the model "
                             "again.") from None
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{source} is not valid JSON ({e.msg} at line {e.lineno}, "
                             f"column {e.colno}). Restore the file from a copy, or train the "
                             "model again.") from None
    except (ValueError, RecursionError) as e:  # a number too long, nesting too deep
        raise ModelFileError(f"{source} cannot be read as JSON ({type(e).__name__}). Restore "
                             "the file from a copy, or train the model again.") from None


def _write_info_json(folder: Path, data: dict[str, Any]) -> None:
    """model.json, the one way it is written (`save_bundle`, `record_onnx`)."""
    fileio.write_json(Path(folder) / INFO_FILE, data)


def record_onnx(folder: str | Path) -> None:
    """Record the SHA-256 of the bundle's model.onnx in its model.json (prediction uses the
    file only while it matches); every other field is kept as it is, byte for byte."""
    source = Path(folder) / INFO_FILE
    data = _read_info_json(source)
    ModelInfo.from_json(data, source)  # a damaged model.json is not written back
    data["onnx"] = {"file": ONNX_FILE, "sha256": sha256(Path(folder) / ONNX_FILE)}
    _write_info_json(Path(folder), data)


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

    folder = Path(folder).expanduser()
    if folder.is_file():
        raise ModelFileError(f"{folder} is a file; a model bundle is a folder. Give a folder "
                             "name, such as runs/dogs/model.")
    others = fileio.foreign_entries(folder, BUNDLE_FILES)
    if others:
        # The bundle replaces the folder whole; files of the user's would go with it.
        raise ModelFileError(f"{folder} holds files that are not part of a model bundle "
                             f"({', '.join(others[:3])}); give a new or empty folder.")
    model = getattr(model, "module", model)  # DistributedDataParallel
    model = getattr(model, "_orig_mod", model)  # torch.compile
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    versions = {"timm": timm.__version__, "torch": torch.__version__.split("+")[0]}
    # Starts empty: a model.onnx of the previous weights must not stay beside the new ones.
    with fileio.changing(folder, start_empty=True) as new:
        weights = new / WEIGHTS_FILE
        fileio.atomic_write(weights,
                            lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
        _write_info_json(new, info.to_json(sha256(weights), versions))
    return folder


def load_bundle(path: str | Path) -> tuple[nn.Module, ModelInfo]:
    """Read a bundle folder (or its model.json) into an eval-mode PyTorch model on the CPU.

    Example:
        model, info = load_bundle("runs/dogs/model")
        print(info.architecture, len(info.class_ids))
    """
    folder = bundle_folder(path)
    info = read_info(folder)
    source, weights = folder / INFO_FILE, folder / WEIGHTS_FILE
    restore = "Restore it from a copy of the model, or train the model again."
    try:
        damaged = sha256(weights) != info.checksums[WEIGHTS_FILE]
    except OSError as e:
        raise ModelFileError(f"Could not read {weights}: {e.strerror or e}.") from None
    if damaged:
        # Prediction needs these weights; nothing can be derived again from the other files.
        raise ModelFileError(f"{weights} is damaged: its checksum differs from the one "
                             f"{source} records (the file was cut short or changed). {restore}")
    # PyTorch and timm are imported once the files are known to be whole (seconds saved).
    from safetensors.torch import load_file

    from clearclass.model import classifier_keys, create_model

    try:
        model, _ = create_model(info.architecture, len(info.class_ids), pretrained=False)
    except Exception as e:  # noqa: BLE001  (whatever timm says of a name it cannot build)
        raise ModelFileError(f"{source} names the architecture '{info.architecture}', which "
                             f"timm cannot build here ({_first_line(e)}). Restore model.json "
                             "from a copy, or install the timm version that trained it.") from None
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as e:  # noqa: BLE001  (safetensors' own error type, OSError)
        raise ModelFileError(f"{weights} cannot be read as weights ({_first_line(e)}). "
                             f"{restore}") from None
    expected, n = model.state_dict(), len(info.class_ids)
    for key in classifier_keys(model):
        if (key in state and state[key].ndim and expected[key].ndim
                and expected[key].shape[0] == n != state[key].shape[0]):
            raise ModelFileError(
                f"{source} lists {n} class{'es' * (n != 1)} but the weights in "
                f"{WEIGHTS_FILE} have {state[key].shape[0]} outputs. Restore model.json from a "
                "copy, or train the model again.")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ModelFileError(f"{weights} does not fit the architecture {info.architecture} "
                             f"that {source} names ({_first_line(e, last=True)}). Restore "
                             "model.json from a copy, or train the model again.") from None
    return model.eval(), info


def _first_line(error: BaseException, last: bool = False) -> str:
    """An exception's message on one line: its first (or last) non-empty line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    line = (lines[-1] if last else lines[0]) if lines else type(error).__name__
    return line if len(line) <= 200 else line[:197] + "..."
