"""Where a model becomes files: a bundle folder (see `bundle.py`), and an ONNX file.

A bundle is `model.safetensors` (the weights, plain tensors) and `model.json` (what the
weights mean: architecture, classes, preprocessing). Nothing is pickled, so loading a
bundle cannot run code. Each file is written to a temp file and renamed; `model.json` is
written last and records the weights' SHA-256, so a crash between the two renames is
detected on load instead of pairing new weights with old labels.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from clearclass import fileio
from clearclass.bundle import (
    INFO_FILE,
    ONNX_FILE,
    WEIGHTS_FILE,
    ModelInfo,
    bundle_folder,
    read_info,
    sha256,
)
from clearclass.errors import ModelFileError


def save_bundle(model: nn.Module, info: ModelInfo, folder: Path) -> Path:
    """Write the model as a bundle folder; returns the folder."""
    folder = Path(folder)
    state = {k: v.detach().to("cpu").contiguous() for k, v in _unwrap(model).state_dict().items()}
    weights = folder / WEIGHTS_FILE
    fileio.atomic_write(weights, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    versions = {"timm": timm.__version__, "torch": torch.__version__.split("+")[0]}
    fileio.write_json(folder / INFO_FILE, info.to_json(sha256(weights), versions))
    onnx_file = folder / ONNX_FILE
    if onnx_file.exists():
        onnx_file.unlink()  # it would describe the previous weights
    return folder


def load_bundle(path: str | Path) -> tuple[nn.Module, ModelInfo]:
    """Read a bundle folder (or its model.json) into an eval-mode model on the CPU."""
    folder = bundle_folder(path)
    info = read_info(folder)
    weights = folder / WEIGHTS_FILE
    expected = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))["weights"]["sha256"]
    if sha256(weights) != expected:
        raise ModelFileError(
            f"{weights} does not match {folder / INFO_FILE} (checksum differs): the bundle was "
            "only partly written or was edited. Re-export the model."
        )
    model = timm.create_model(info.architecture, pretrained=False,
                              num_classes=len(info.class_ids))
    try:
        model.load_state_dict(load_file(str(weights), device="cpu"))
    except RuntimeError as e:
        raise ModelFileError(f"{weights} does not fit {info.architecture}: {e}") from None
    return model.eval(), info


def export_onnx(path: str | Path, opset: int = 18, check: bool = True) -> Path:
    """Write model.onnx into a bundle; with `check`, compare it with PyTorch on test inputs.

    The ONNX file takes the normalised image batch (N, 3, size, size) and returns logits,
    so prediction can run with onnxruntime alone.
    """
    folder = bundle_folder(path)
    model, info = load_bundle(folder)
    example = torch.randn(2, 3, info.size, info.size)
    target = folder / ONNX_FILE

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            try:
                # The TorchScript exporter: 0.4 s for efficientnet_lite0, against 8.4 s for
                # the dynamo one, and mature for convolutional networks. PyTorch deprecates
                # it, so the dynamo exporter takes over where it fails or is gone.
                torch.onnx.export(
                    model, (example,), str(tmp), dynamo=False, opset_version=opset,
                    input_names=["image"], output_names=["logits"],
                    dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                )
            except Exception:  # noqa: BLE001  (any failure: try the other exporter)
                program = torch.onnx.export(
                    model, (example,), dynamo=True, opset_version=opset,
                    input_names=["image"], output_names=["logits"],
                    dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
                )
                program.save(str(tmp))

    fileio.atomic_write(target, write)
    if check:
        max_diff = check_onnx(target, model, info.size)
        if max_diff > 1e-3:
            target.unlink()
            raise ModelFileError(
                f"The ONNX export of {info.architecture} differs from PyTorch by {max_diff:.2g} "
                "in the logits; it was removed. Please report this."
            )
    return target


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


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(model, "_orig_mod", model)  # torch.compile


