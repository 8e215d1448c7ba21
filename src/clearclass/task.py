"""What a classification task is, in one place: how a network's outputs become a loss to
train on, a count of right answers, probabilities and a decision.

The loop trains with `loss` and measures with `correct`; prediction (with or without
PyTorch) turns logits into `probabilities` and `decide`s. A second task (several labels
per photo: sigmoid, binary cross-entropy, a threshold) is a second class with these four
methods, not a change to the loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


class SingleLabel:
    """One class per photo (fastai's `CategoryBlock`): softmax over the classes,
    cross-entropy, and the most likely class as the answer."""

    name = "single"

    def loss(self, logits: torch.Tensor, targets: torch.Tensor,
             reduction: str = "mean") -> torch.Tensor:
        """Cross-entropy of `logits` (N x classes) against class indices `targets` (N)."""
        import torch.nn.functional as F

        return F.cross_entropy(logits, targets, reduction=reduction)

    def correct(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """How many photos the decision gets right (a tensor on the logits' device)."""
        return (logits.argmax(1) == targets).sum()

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Softmax of each row, in NumPy (prediction runs without PyTorch)."""
        shifted = logits - logits.max(axis=1, keepdims=True)  # exp cannot overflow
        e = np.exp(shifted)
        return e / e.sum(axis=1, keepdims=True)

    def decide(self, probabilities: np.ndarray) -> np.ndarray:
        """The class index chosen for each row."""
        return probabilities.argmax(axis=1)


SINGLE_LABEL = SingleLabel()
