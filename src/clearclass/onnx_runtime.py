"""ONNX in one place: writing a network as ONNX, starting ONNX Runtime, and checking the two agree.

Three parts of clearclass run ONNX Runtime: prediction (`predict.py`), the forward-only
passes of training (`training/forward_only.py`) and the check of an export. Each starts its
session with `session`, writes ONNX with `export_module`, and compares ONNX Runtime (or a
rewritten network) with PyTorch by `outputs_match`, so that one tolerance applies to all.

A bundle's model.onnx also says what its outputs mean in its metadata (`write_metadata`,
`read_metadata`): the task, the class ids and a multi-label model's thresholds, for a user
who has the file without model.json.

A low layer: it imports neither the training loop nor the commands, and it imports PyTorch
and ONNX Runtime only inside the functions that need them, so that prediction with ONNX
Runtime runs where PyTorch is not installed.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearclass import fileio
from clearclass.bundle import ONNX_FILE, ModelInfo, bundle_folder, load_bundle, record_onnx
from clearclass.errors import ModelFileError

if TYPE_CHECKING:
    import onnxruntime
    import torch
    from torch import nn

# How far outputs may differ and still count as the same network: a fraction of the largest
# magnitude in the reference output (float32 rounding grows with the values, and fused
# kernels round differently), plus a floor for outputs that are all near zero. A broken
# export differs by the order of the outputs themselves.
EXPORT_TOLERANCE = 1e-3
_FLOOR = 1e-6

_OPTIMIZATIONS = ("none", "basic", "extended", "all")


def session(model: str | os.PathLike[str] | bytes, threads: int | None = None, *,
            inter_op_threads: int | None = None, spinning: bool = True,
            optimization: str = "all", log_level: int | None = None,
            providers: Sequence[str] = ("CPUExecutionProvider",)
            ) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session for an ONNX file (a path) or an ONNX model in memory (bytes).

    `threads`: the threads one run uses (ONNX Runtime's intra-op threads; None: its default,
    one per physical core). `inter_op_threads`: the threads that run independent nodes at
    once (None: its default); the session runs the graph in sequence, so these matter little.
    `spinning=False`: the threads sleep as soon as a run ends instead of spinning for more
    work, leaving the cores to other work between runs. `optimization`: graph optimisations,
    "none", "basic", "extended" or "all" (fusions of convolutions with their BatchNorm and
    activation among them). `log_level`: the least severity logged, 0 (verbose) to 4 (fatal);
    None: ONNX Runtime's default (warnings). Raises what ONNX Runtime raises for a model it
    cannot load.
    """
    import onnxruntime as ort

    if optimization not in _OPTIMIZATIONS:
        raise ValueError(f"optimization must be one of {', '.join(_OPTIMIZATIONS)}; "
                         f"got {optimization!r}")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    if inter_op_threads is not None:
        options.inter_op_num_threads = inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # ONNX Runtime's default
    options.graph_optimization_level = {
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    if log_level is not None:
        options.log_severity_level = log_level
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(source, options, providers=list(providers))


def largest_difference(got: Any, expected: Any) -> float:
    """The largest absolute difference between two outputs of the same shape (NumPy arrays
    or tensors); infinite where their shapes differ."""
    if tuple(got.shape) != tuple(expected.shape):
        return float("inf")
    return float(abs(got - expected).max()) if math.prod(expected.shape) else 0.0


def outputs_match(got: Any, expected: Any) -> bool:
    """Whether `got` is `expected` up to rounding: they differ by at most EXPORT_TOLERANCE of
    `expected`'s largest magnitude. The one check of every rewritten network (an ONNX export,
    BatchNorm folded into convolutions) against the PyTorch model it came from."""
    difference = largest_difference(got, expected)
    if difference == 0.0:  # also two empty outputs
        return True
    # False for a NaN, and for outputs of different shapes (an infinite difference).
    return difference <= EXPORT_TOLERANCE * float(abs(expected).max()) + _FLOOR


# What a bundle's model.onnx outputs, in this order: the logits (output 0, all that files
# exported before the probabilities existed have), then the task's probabilities (softmax
# for a single-label model, sigmoids for a multi-label one), so that a consumer of the file
# needs neither to know the task nor to compute them.
BUNDLE_OUTPUTS = ("logits", "probabilities")


# What a bundle's model.onnx says of itself in its metadata_props (ONNX Runtime gives them as
# `session.get_modelmeta().custom_metadata_map`), so that the file alone says what its outputs
# mean: "task" ("single": softmax, one class per photo; "multi": a sigmoid per label),
# "class_ids" (a JSON list, in the outputs' order) and, for a multi-label model, "thresholds"
# (a JSON list in the same order: a label is predicted when its probability reaches its
# threshold). Files exported before have none of them.
METADATA_KEYS = ("task", "class_ids", "thresholds")


@dataclass(frozen=True)
class OnnxMetadata:
    """What a bundle's model.onnx says of its outputs (`read_metadata`)."""

    task: str  # "single" or "multi"
    class_ids: list[str]  # in the outputs' order
    thresholds: list[float] | None  # multi-label: one per class; None for a single-label model


def bundle_metadata(info: ModelInfo) -> dict[str, str]:
    """The METADATA_KEYS of `info`'s model as model.onnx holds them (JSON text; a name that
    is not UTF-8 as JSON's \\udce9, which ONNX's UTF-8 strings can hold)."""
    values = {"task": info.task, "class_ids": json.dumps(list(info.class_ids))}
    if info.task == "multi":
        values["thresholds"] = json.dumps([float(t) for t in info.thresholds or ()])
    return values


def write_metadata(onnx_path: Path, info: ModelInfo) -> None:
    """Write `info`'s task, class ids and thresholds into the ONNX file's metadata (replacing
    any it had; its other metadata kept), as one change of the file."""
    import onnx

    model = onnx.load(str(onnx_path))
    kept = {p.key: p.value for p in model.metadata_props if p.key not in METADATA_KEYS}
    onnx.helper.set_model_props(model, {**kept, **bundle_metadata(info)})
    fileio.atomic_write(Path(onnx_path), lambda tmp: onnx.save(model, str(tmp)))


def read_metadata(model: onnxruntime.InferenceSession | str | os.PathLike[str],
                  where: str = ONNX_FILE) -> OnnxMetadata | None:
    """What a bundle's model.onnx (a path, or a session of it) says of its outputs; None for
    a file exported before clearclass wrote it (it has no "task"). Needs only ONNX Runtime.

    Metadata that is not what clearclass writes (another task, class ids that are not a
    list of names, thresholds that are not one probability per class) raises
    MetadataError naming `where` and the key.

    Example:
        about = read_metadata("runs/dogs/model/model.onnx")
        print(about.task, about.class_ids[:2], about.thresholds)
    """
    checker = model if hasattr(model, "get_modelmeta") else session(model)
    values = checker.get_modelmeta().custom_metadata_map
    if "task" not in values:
        return None

    def fail(problem: str) -> MetadataError:
        return MetadataError(where, problem)

    def parsed(key: str) -> Any:
        try:
            return json.loads(values[key])
        except KeyError:
            raise fail(f"it has no '{key}'") from None
        except (ValueError, RecursionError):  # not JSON, or nested too deep
            raise fail(f"'{key}' is not JSON") from None

    task = values["task"]
    if task not in ("single", "multi"):
        raise fail(f"'task' is {_shown(task)}, not \"single\" or \"multi\"")
    class_ids = parsed("class_ids")
    if (not isinstance(class_ids, list) or not class_ids
            or not all(isinstance(c, str) and c for c in class_ids)):
        raise fail("'class_ids' is not a list of class ids")
    thresholds = None
    if task == "multi":
        thresholds = parsed("thresholds")
        # NaN fails the range too: every comparison with it is false.
        if (not isinstance(thresholds, list) or len(thresholds) != len(class_ids)
                or not all(isinstance(t, (int, float)) and not isinstance(t, bool)
                           and 0 <= t <= 1 for t in thresholds)):
            raise fail(f"'thresholds' is not {len(class_ids)} numbers from 0 to 1, one per "
                       "class")
        thresholds = [float(t) for t in thresholds]
    return OnnxMetadata(task, class_ids, thresholds)


class MetadataError(ModelFileError):
    """A model.onnx whose metadata is not what clearclass writes; `problem` says how."""

    def __init__(self, where: str, problem: str):
        self.problem = problem
        super().__init__(f"{where}'s metadata is not what clearclass writes: {problem}. "
                         "`clearclass export` writes the file again.")


def _shown(text: str) -> str:
    """A string from a file, quoted and shortened for a message."""
    shown = json.dumps(text)
    return shown if len(shown) <= 40 else shown[:36] + '..."'


def export_module(module: nn.Module, example: torch.Tensor, target: Path | io.BytesIO,
                  opset: int = 18, fallback: bool = True,
                  outputs: Sequence[str] = ("logits",)) -> None:
    """Write `module`'s forward pass as ONNX (input "image", any batch size) to a file or a
    buffer. `outputs`: the names of what forward returns, in order (a module returning a
    tuple has several). `fallback`: where the TorchScript exporter fails, use the dynamo
    one (a file only)."""
    import torch

    outputs = list(outputs)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            # The TorchScript exporter: 0.4 s for efficientnet_lite0, against 8.4 s for
            # the dynamo one, and mature for convolutional networks. PyTorch deprecates
            # it, so the dynamo exporter takes over where it fails or is gone.
            torch.onnx.export(
                module, (example,), target if isinstance(target, io.BytesIO) else str(target),
                dynamo=False, opset_version=opset,
                input_names=["image"], output_names=outputs,
                dynamic_axes={"image": {0: "batch"}, **{name: {0: "batch"} for name in outputs}},
            )
        except Exception:  # noqa: BLE001  (any failure: try the other exporter)
            if not fallback or isinstance(target, io.BytesIO):
                raise
            program = torch.onnx.export(
                module, (example,), dynamo=True, opset_version=opset,
                input_names=["image"], output_names=outputs,
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
            )
            program.save(str(target))


def with_probabilities(model: nn.Module, task: Any) -> nn.Module:
    """`model` returning (logits, probabilities): BUNDLE_OUTPUTS, the probabilities by
    `task` (task.py's `torch_probabilities`: softmax or sigmoids)."""
    import torch

    class WithProbabilities(torch.nn.Module):
        def __init__(self, network: nn.Module):
            super().__init__()
            self.network = network

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.network(x)
            return logits, task.torch_probabilities(logits)

    return WithProbabilities(model).eval()


def export_bundle(path: str | Path, opset: int = 18, check: bool = True) -> Path:
    """Write model.onnx into a bundle; with `check`, compare it with PyTorch on test inputs.

    `path`: a bundle folder, its model.json, or a run folder.
    The ONNX file takes the normalised image batch (N, 3, size, size) and returns the logits
    and the probabilities (BUNDLE_OUTPUTS: softmax, or a multi-label model's sigmoids), so
    prediction can run with onnxruntime alone; its metadata says the task, the class ids
    and a multi-label model's thresholds (`write_metadata`). The check covers the outputs
    and the metadata. model.json then records the file's SHA-256, and prediction uses
    model.onnx only while it matches.
    `clearclass export` (`export.export_onnx`) and the end of training both write it here.
    """
    import torch

    folder = bundle_folder(path)
    model, info = load_bundle(folder)
    network = with_probabilities(model, info.decision())
    example = torch.randn(2, 3, info.item_resize, info.item_resize)
    target = folder / ONNX_FILE

    def write(tmp: Path) -> None:
        export_module(network, example, tmp, opset, outputs=BUNDLE_OUTPUTS)
        write_metadata(tmp, info)

    fileio.atomic_write(target, write)
    if check:
        got, expected = _outputs(target, network, info.item_resize)
        names = output_names(target)
        problem = None
        if names != list(BUNDLE_OUTPUTS):
            problem = f"has the outputs {', '.join(names)}, not {', '.join(BUNDLE_OUTPUTS)}"
        elif read_metadata(target) != OnnxMetadata(info.task, list(info.class_ids),
                                                   info.thresholds):
            problem = "does not hold the task, classes and thresholds of model.json"
        for name, one, reference in zip(BUNDLE_OUTPUTS, got, expected):
            if problem is None and not outputs_match(one, reference):
                problem = (f"differs from PyTorch by {largest_difference(one, reference):.2g} "
                           f"in the {name}")
        if problem is not None:
            target.unlink()
            raise ModelFileError(f"The ONNX export of {info.architecture} {problem}; it was "
                                 "removed. Please report this.")
    # Recorded once model.onnx is in place and checked. A process killed in between leaves
    # model.json with no checksum (prediction then tries the file and falls back to PyTorch
    # if ONNX Runtime refuses it) or the previous file's (a mismatch: PyTorch is used).
    record_onnx(folder)
    return target


def output_names(onnx_path: Path) -> list[str]:
    """The names of an ONNX file's outputs, in order (read without starting a session).
    A bundle's model.onnx exported before the probabilities were added has only "logits"."""
    import onnx

    return [output.name for output in onnx.load(str(onnx_path), load_external_data=False)
            .graph.output]


def check_onnx(onnx_path: Path, model: nn.Module, size: int) -> float:
    """Largest absolute difference in logits (the first output) between ONNX Runtime and
    PyTorch."""
    got, expected = _outputs(onnx_path, model, size)
    return largest_difference(got[0], expected[0])


def _outputs(onnx_path: Path, model: nn.Module, size: int) -> tuple[list, list]:
    """ONNX Runtime's outputs and PyTorch's (lists of NumPy arrays, in order) for the same
    random batch."""
    import torch

    checker = session(onnx_path)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, size, size, generator=gen)
    with torch.no_grad():
        expected = model(x)
    expected = [t.numpy() for t in (expected if isinstance(expected, tuple) else (expected,))]
    got = checker.run(None, {checker.get_inputs()[0].name: x.numpy()})
    return got, expected
