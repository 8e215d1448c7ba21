"""Export a model bundle to ONNX, so that prediction can run in ONNX Runtime alone.

`model.onnx` is written beside the bundle's weights (`bundle.py`) and checked against
PyTorch on random inputs before it is kept.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import torch
from torch import nn

from clearclass import fileio
from clearclass.bundle import ONNX_FILE, bundle_folder, load_bundle, record_onnx
from clearclass.errors import ModelFileError


def export_onnx(path: str | Path, opset: int = 18, check: bool = True) -> Path:
    """Write model.onnx into a bundle; with `check`, compare it with PyTorch on test inputs.

    The ONNX file takes the normalised image batch (N, 3, size, size) and returns logits,
    so prediction can run with onnxruntime alone. model.json then records the file's
    SHA-256, and prediction uses model.onnx only while it matches.
    """
    folder = bundle_folder(path)
    model, info = load_bundle(folder)
    example = torch.randn(2, 3, info.size, info.size)
    target = folder / ONNX_FILE

    def write(tmp: Path) -> None:
        export_module(model, example, tmp, opset)

    fileio.atomic_write(target, write)
    if check:
        max_diff = check_onnx(target, model, info.size)
        if max_diff > 1e-3:
            target.unlink()
            raise ModelFileError(
                f"The ONNX export of {info.architecture} differs from PyTorch by {max_diff:.2g} "
                "in the logits; it was removed. Please report this."
            )
    # Recorded once model.onnx is in place and checked. A process killed in between leaves
    # model.json with no checksum (prediction then tries the file and falls back to PyTorch
    # if ONNX Runtime refuses it) or the previous file's (a mismatch: PyTorch is used).
    record_onnx(folder)
    return target


def export_module(module: nn.Module, example: torch.Tensor, target: Path | io.BytesIO,
                  opset: int = 18, fallback: bool = True) -> None:
    """Write `module`'s forward pass as ONNX (input "image", output "logits", any batch size)
    to a file or a buffer. `fallback`: where the TorchScript exporter fails, use the dynamo
    one (a file only)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            # The TorchScript exporter: 0.4 s for efficientnet_lite0, against 8.4 s for
            # the dynamo one, and mature for convolutional networks. PyTorch deprecates
            # it, so the dynamo exporter takes over where it fails or is gone.
            torch.onnx.export(
                module, (example,), target if isinstance(target, io.BytesIO) else str(target),
                dynamo=False, opset_version=opset,
                input_names=["image"], output_names=["logits"],
                dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            )
        except Exception:  # noqa: BLE001  (any failure: try the other exporter)
            if not fallback or isinstance(target, io.BytesIO):
                raise
            program = torch.onnx.export(
                module, (example,), dynamo=True, opset_version=opset,
                input_names=["image"], output_names=["logits"],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
            )
            program.save(str(target))


def check_onnx(onnx_path: Path, model: nn.Module, size: int) -> float:
    """Largest absolute difference in logits between ONNX Runtime and PyTorch."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, size, size, generator=gen)
    with torch.no_grad():
        expected = model(x).numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    return float(abs(got - expected).max())
