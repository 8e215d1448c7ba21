"""ONNX in one place: writing a network as ONNX, starting ONNX Runtime, and checking the two agree.

Three parts of clearclass run ONNX Runtime: prediction (`predict.py`), the forward-only
passes of training (`training/forward_only.py`) and the check of an export. Each starts its
session with `session`, writes ONNX with `export_module`, and compares ONNX Runtime (or a
rewritten network) with PyTorch by `outputs_match`, so that one tolerance applies to all.

A low layer: it imports neither the training loop nor the commands, and it imports PyTorch
and ONNX Runtime only inside the functions that need them, so that prediction with ONNX
Runtime runs where PyTorch is not installed.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearclass import fileio
from clearclass.bundle import ONNX_FILE, bundle_folder, load_bundle, record_onnx
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
    prediction can run with onnxruntime alone; the check covers both. model.json then
    records the file's SHA-256, and prediction uses model.onnx only while it matches.
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

    fileio.atomic_write(target, write)
    if check:
        got, expected = _outputs(target, network, info.item_resize)
        names = output_names(target)
        problem = None
        if names != list(BUNDLE_OUTPUTS):
            problem = f"has the outputs {', '.join(names)}, not {', '.join(BUNDLE_OUTPUTS)}"
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
