"""Forward-only passes while training: the frozen body's features, and validation.

Nothing learns in them, so an inference engine may run them. On 2 cores, a frozen-epoch
step of efficientnet_lite0 (batch 64) took 0.42 s at 128 px in PyTorch, 0.40 s with
BatchNorm folded into the convolutions (`model.fold_batchnorm`), and 0.28 s in ONNX
Runtime, which also fuses the activations (at 224 px: 1.33, 1.04 and 0.73 s;
benchmarks/TECHNIQUES.md). Exporting the
network and starting ONNX Runtime takes about a second, so ONNX Runtime runs a pass only
on the CPU, in fp32, with at least `MIN_BATCHES` batches to win that back, and only once
its output matches PyTorch's; otherwise the BatchNorm-folded copy runs in PyTorch.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from clearclass.model import fold_batchnorm
from clearclass.onnx_runtime import export_module, outputs_match, session

MIN_BATCHES = 10  # export and start: about 1 s; a batch at 128 px saves 0.1 s


class _Features(nn.Module):
    """A timm model's body alone: the features its head takes."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def forward_only(model: nn.Module, features: bool, example: torch.Tensor, batches: int,
                 dtype: torch.dtype = torch.float32) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function giving `model`'s logits (or, with `features`, its body's features) for a
    batch like `example`, computed without gradients, for the next `batches` batches."""
    folded = fold_batchnorm(model)
    net: nn.Module = _Features(folded) if features else folded
    if example.device.type == "cpu" and dtype == torch.float32 and batches >= MIN_BATCHES:
        runner = _in_onnx_runtime(net, example)
        if runner is not None:
            return runner

    def in_pytorch(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return net(x)

    return in_pytorch


def _in_onnx_runtime(net: nn.Module, example: torch.Tensor
                     ) -> Callable[[torch.Tensor], torch.Tensor] | None:
    import onnxruntime  # noqa: F401  (missing: an ImportError, not a silent fallback)

    buffer = io.BytesIO()
    example = example.contiguous()
    try:
        export_module(net, example, buffer, fallback=False)
        # As many threads as PyTorch's, and no spinning: ONNX Runtime's threads would
        # otherwise spin after each batch, taking the cores from the PyTorch work between
        # batches (the head's step, augmentation). Errors only: a failure falls back.
        runner = session(buffer.getvalue(), torch.get_num_threads(), spinning=False,
                         log_level=3)
    except Exception:  # noqa: BLE001  (a model it cannot take runs in PyTorch)
        return None
    name = runner.get_inputs()[0].name

    def run(x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().contiguous().numpy(), dtype=np.float32)
        return torch.from_numpy(runner.run(None, {name: array})[0])

    with torch.no_grad():
        expected = net(example)
    if not outputs_match(run(example), expected):
        return None
    return run
