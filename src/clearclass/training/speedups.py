"""Faster ways to compute the same training: one call per stage, one switch for all.

The loop reads like torchvision's reference: a step calls the model, validation calls the
model. What this module changes is how fast those calls run, never what they compute
(each is checked against PyTorch, or gives the same gradient by construction):

- the frozen body, run forward only, with BatchNorm folded into the convolutions and, on
  the CPU where it pays, in ONNX Runtime (`forward_only.py`): no activations are kept for
  back-propagation through a body that does not learn;
- validation the same way, on a folded copy of the current weights;
- on the CPU, unfrozen batches forward and backward in chunks of 16 photos (the same
  gradient when BatchNorm statistics are fixed, a third of the memory), and a faster
  weight gradient for small depthwise convolutions (`depthwise.py`);
- on the CPU, glibc keeps freed memory for reuse (`device.keep_freed_memory`).

`CLEARCLASS_SPEEDUPS=0` turns them all off: the plain path, to compare results against.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from clearclass import device as devices
from clearclass.model import forward_frozen_body
from clearclass.training.depthwise import faster_depthwise_gradients
from clearclass.training.forward_only import forward_only

SWITCH = "CLEARCLASS_SPEEDUPS"  # "0": every speed-up off
# Photos per chunk of an unfrozen step on the CPU. Measured on efficientnet_lite0, batch
# 64, 224 px, 2 cores: a step takes 2.1 s whole (7.5 GB peak), 2.2 s in chunks of 16
# (2.6 GB peak).
CPU_MICRO_BATCH = 16

Forward = Callable[[torch.Tensor], torch.Tensor]


def enabled() -> bool:
    return os.environ.get(SWITCH, "1") != "0"


def for_process(compute: devices.Compute) -> None:
    """What speeds up the whole process: on the CPU, memory kept for reuse (a step's time
    halves; the process then keeps its peak memory until it exits)."""
    if enabled() and compute.device.type == "cpu":
        devices.keep_freed_memory()


@dataclass
class StageForward:
    """What a stage's steps and its validations call."""

    model: nn.Module
    step: nn.Module  # what a training step calls: the model, or its head on faster features
    micro_batch: int | None  # forward and backward in chunks this size (same gradient)
    example: torch.Tensor  # a batch shaped as training's, for exporting
    dtype: torch.dtype
    fast_body: Forward | None = None  # the frozen body's features, sooner

    def validation(self, batches: int) -> Forward | nn.Module:
        """The model's logits for `batches` validation batches, with the current weights."""
        if not enabled():
            return self.model
        if self.fast_body is not None:  # the frozen body, already running fast: reuse it
            self.model.eval()  # the head's dropout off; the next epoch sets training mode
            model, body = self.model, self.fast_body

            def head_on_fast_body(x: torch.Tensor) -> torch.Tensor:
                with torch.no_grad():
                    return forward_frozen_body(model, x, body)

            return head_on_fast_body
        return forward_only(self.model, False, self.example, batches, self.dtype)


@contextlib.contextmanager
def stage(model: nn.Module, compute: devices.Compute, *, frozen: bool, adapt_batchnorm: bool,
          batch_size: int, item_resize: int, train_batches: int) -> Iterator[StageForward]:
    """The calls of one stage of training (`frozen` body, or everything learning), sped up
    as far as they can be without changing what they compute; in effect until it ends."""
    example = torch.randn(2, 3, item_resize, item_resize, device=compute.device).contiguous(
        memory_format=torch.channels_last)
    plain = StageForward(model, model, None, example, compute.dtype)
    on_cpu = compute.device.type == "cpu"
    if not enabled():
        yield plain
    elif frozen and not adapt_batchnorm:  # the body runs forward only
        body = forward_only(model, True, example, train_batches, compute.dtype)
        yield StageForward(model, HeadOnFrozenBody(model, body), None, example,
                           compute.dtype, fast_body=body)
    elif on_cpu and not frozen:
        # Chunks give the whole batch's gradient only when a photo's output does not depend
        # on its batch, that is with BatchNorm statistics fixed.
        chunk = CPU_MICRO_BATCH if not adapt_batchnorm and batch_size > CPU_MICRO_BATCH \
            else None
        with faster_depthwise_gradients(model):
            yield StageForward(model, model, chunk, example, compute.dtype)
    else:
        yield plain


class HeadOnFrozenBody(nn.Module):
    """The model with its body run forward only, so DDP sees (and syncs) the head alone."""

    def __init__(self, model: nn.Module, features: Forward | None = None):
        super().__init__()
        self.model = model
        # Not a submodule: DDP should neither sync nor broadcast the forward-only copy.
        self.__dict__["features"] = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return forward_frozen_body(self.model, x, self.features)
