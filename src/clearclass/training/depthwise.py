"""A faster weight gradient for depthwise convolutions with small outputs, on the CPU.

On the CPU, PyTorch computes a depthwise convolution's weight gradient with oneDNN, which
is slow when the output is small: for efficientnet_lite0's last stage at 128 px (1,152
channels, 4 x 4 outputs, 5 x 5 kernels, chunks of 16 photos) it takes 17-18 ms, twenty
times the forward pass, and its three blocks alone took 13% of an unfrozen training step.
The same gradient as one multiply-and-sum per kernel position takes 4-7 ms there
(benchmarks/TECHNIQUES.md). No library offers it, hence these few lines; the input
gradient, and every larger convolution, stay with PyTorch.

    with faster_depthwise_gradients(model):
        ...  # train
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

# Output positions (height x width) up to which the sums are faster than oneDNN, for
# stride 1. Measured (16 photos, 5 x 5 kernels, benchmarks/TECHNIQUES.md): 4 x 4 outputs
# of 1,152 channels 16.8 -> 6.5 ms; at 7 x 7, and with stride 2 (672 channels, 4 x 4:
# 2.4 -> 4.1 ms), oneDNN is faster.
MAX_OUTPUT_POSITIONS = 25


class _DepthwiseConv2d(torch.autograd.Function):
    """F.conv2d for a depthwise convolution, its weight gradient summed per kernel
    position."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.settings = (stride, padding, dilation)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, stride, padding, dilation, x.shape[1])

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.settings
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = torch.ops.aten.convolution_backward(
                grad, x, weight, None, list(stride), list(padding), list(dilation), False,
                [0, 0], x.shape[1], [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_weight = depthwise_weight_gradient(x, grad, weight.shape, stride, padding)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum((0, 2, 3))
        return grad_input, grad_weight, grad_bias, None, None, None


def depthwise_weight_gradient(x: torch.Tensor, grad: torch.Tensor, shape: torch.Size,
                              stride: tuple[int, int],
                              padding: tuple[int, int]) -> torch.Tensor:
    """d loss / d weight of a depthwise convolution (dilation 1): for each kernel position,
    the sum over photos and output positions of input times output gradient."""
    channels, _, kh, kw = shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = grad.shape[2], grad.shape[3]
    padded = F.pad(x, (pw, pw, ph, ph))
    out = x.new_empty(channels, kh, kw)
    for i in range(kh):
        for j in range(kw):
            window = padded[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
            out[:, i, j] = (window * grad).sum((0, 2, 3))
    return out.view(shape)


class FastGradDepthwiseConv2d(nn.Conv2d):
    """nn.Conv2d whose weight gradient, for small outputs on the CPU, is summed by hand.

    Installed by changing the class of an existing depthwise nn.Conv2d, so its weights,
    state_dict and forward results stay those of the model."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor,
                      bias: torch.Tensor | None) -> torch.Tensor:
        if (weight.requires_grad and torch.is_grad_enabled() and input.device.type == "cpu"
                and self.stride == (1, 1)
                and input.dtype == torch.float32 and weight.dtype == torch.float32
                and not torch.is_autocast_enabled("cpu")):
            oh = input.shape[2] + 2 * self.padding[0] - self.kernel_size[0] + 1  # stride 1
            ow = input.shape[3] + 2 * self.padding[1] - self.kernel_size[1] + 1
            if oh * ow <= MAX_OUTPUT_POSITIONS:
                return _DepthwiseConv2d.apply(input, weight, bias, self.stride,
                                              self.padding, self.dilation)
        return super()._conv_forward(input, weight, bias)


def _is_plain_depthwise(module: nn.Module) -> bool:
    return (type(module) is nn.Conv2d and module.groups == module.in_channels
            == module.out_channels and module.dilation == (1, 1)
            and module.padding_mode == "zeros" and not isinstance(module.padding, str))


@contextlib.contextmanager
def faster_depthwise_gradients(model: nn.Module) -> Iterator[int]:
    """Within the block, the model's depthwise convolutions compute their weight gradient
    as above; yields how many there are. The classes are put back on leaving."""
    changed = [m for m in model.modules() if _is_plain_depthwise(m)]
    for module in changed:
        module.__class__ = FastGradDepthwiseConv2d
    try:
        yield len(changed)
    finally:
        for module in changed:
            module.__class__ = nn.Conv2d
