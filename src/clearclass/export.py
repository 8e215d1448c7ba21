"""Export a model bundle to ONNX, so that prediction can run in ONNX Runtime alone.

`model.onnx` is written beside the bundle's weights (`bundle.py`) and checked against
PyTorch on random inputs before it is kept. The work is done in `onnx_runtime.py`, a low
layer that the training loop can use too; this module is what `clearclass export` calls.
"""

from __future__ import annotations

from pathlib import Path

from clearclass.onnx_runtime import check_onnx, export_bundle, export_module

# Kept importable from here, where they were defined before onnx_runtime.py held them.
__all__ = ["check_onnx", "export_module", "export_onnx"]


def export_onnx(path: str | Path, opset: int = 18, check: bool = True) -> Path:
    """Write model.onnx into a bundle; with `check`, compare it with PyTorch on test inputs.

    `path`: a bundle folder, its model.json, or a run folder. The ONNX file takes the
    normalised image batch (N, 3, size, size) and returns two outputs: "logits", then
    "probabilities" (a softmax over the classes; a multi-label model's sigmoid per label), so
    prediction can run with onnxruntime alone; its metadata holds the task, the class ids
    and a multi-label model's thresholds (`onnx_runtime.read_metadata` reads them). The
    check covers the outputs and the metadata. model.json then records the file's SHA-256,
    and prediction uses model.onnx only while it matches.
    """
    return export_bundle(path, opset, check)
