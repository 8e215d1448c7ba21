from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clearclass.training.depthwise import (
    FastGradDepthwiseConv2d,
    depthwise_weight_gradient,
    faster_depthwise_gradients,
)


@pytest.mark.parametrize("channels, size, kernel, stride", [
    (48, 4, 5, 1), (32, 8, 5, 2), (16, 7, 3, 1), (24, 6, 3, 2)])
def test_weight_gradient_is_pytorchs(channels, size, kernel, stride):
    torch.manual_seed(0)
    x = torch.randn(3, channels, size, size).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(channels, 1, kernel, kernel, requires_grad=True)
    out = F.conv2d(x, weight, None, stride, kernel // 2, 1, channels)
    grad = torch.randn_like(out)
    out.backward(grad)
    mine = depthwise_weight_gradient(x, grad, weight.shape, (stride, stride),
                                     (kernel // 2, kernel // 2))
    assert torch.allclose(mine, weight.grad, rtol=1e-4, atol=1e-4)


def test_a_model_trains_to_the_same_gradients_and_gets_its_classes_back():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1),
        nn.Conv2d(16, 16, 5, padding=2, groups=16, bias=True),   # 4 x 4: replaced path
        nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16),    # 2 x 2
        nn.Conv2d(16, 8, 1),                                     # not depthwise
        nn.Flatten(), nn.Linear(8 * 2 * 2, 3))
    x, y = torch.randn(5, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1])

    def gradients():
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        return [p.grad.clone() for p in model.parameters()]

    expected = gradients()
    with faster_depthwise_gradients(model) as changed:
        assert changed == 2
        assert type(model[1]) is FastGradDepthwiseConv2d and type(model[3]) is nn.Conv2d
        got = gradients()
    assert all(type(m) is not FastGradDepthwiseConv2d for m in model)
    for a, b in zip(expected, got):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
