"""What a classification task is, in one place: how a network's outputs become a loss to
train on, a count of right answers, probabilities and a decision.

The loop trains with `loss` and measures with `correct`; prediction (with or without
PyTorch) turns logits into `probabilities` and `decide`s. A second task (several labels
per photo: sigmoid, binary cross-entropy, a threshold) is a second class with these four
methods, not a change to the loop.

`--balance weights` lives here too: `for_training` gives the task the class weights of the
training photos, and `loss` weighs each photo's cross-entropy by its class's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# --balance: what training does about classes with fewer photos than others.
# none: nothing; weights: a class-weighted loss (`balanced_class_weights`); sampler: each
# epoch draws photos with replacement, every class as often (`data.loader.PhotoBatches`).
BALANCE_MODES = ("none", "weights", "sampler")


def balanced_class_weights(targets: Sequence[int], classes: int) -> np.ndarray:
    """Each class's weight, inversely proportional to its training photos: n / (k * count),
    as scikit-learn's `compute_class_weight("balanced")`, where n is the photos and k the
    classes that have any. Over the training photos the weights average exactly 1, so the
    weighted loss keeps the scale of the plain one (and the learning rate its meaning). A
    class without training photos is never a target; its weight is 0."""
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=classes)[:classes]
    present = counts > 0
    weights = np.zeros(classes, dtype=np.float64)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


class SingleLabel:
    """One class per photo (fastai's `CategoryBlock`): softmax over the classes,
    cross-entropy, and the most likely class as the answer."""

    name = "single"

    def __init__(self, class_weights: np.ndarray | None = None):
        self.class_weights = class_weights  # per class, for --balance weights; None: all 1
        self._weights_on: dict = {}  # device -> class_weights as a tensor there, copied once

    def for_training(self, balance: str, targets: Sequence[int], classes: int) -> SingleLabel:
        """The task `train` optimises with `--balance` (BALANCE_MODES): with `weights`, its
        loss weighs each class by `balanced_class_weights` of the training `targets`."""
        if balance != "weights":
            return self
        return SingleLabel(balanced_class_weights(targets, classes))

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean",
             weighted: bool = True) -> torch.Tensor:
        """Cross-entropy of `logits` (N x classes) against class indices `targets` (N);
        with class weights (and `weighted`), each photo's term is multiplied by its class's
        weight. `weighted=False` is the plain loss, which validation reports whatever
        --balance, so that valid_loss compares across runs.

        The weighted mean divides by the N photos, not by the sum of their weights as
        PyTorch's `cross_entropy(weight=...)` does: then the loss of a batch is the mean of
        its parts' losses weighted by their sizes, so a batch split into chunks (CPU
        micro-batches) or shared among torchrun's processes gets the same gradient as the
        whole; since the weights average 1 over the training photos, an epoch weighs the
        same either way.
        """
        import torch
        import torch.nn.functional as F

        if self.class_weights is None or not weighted:
            return F.cross_entropy(logits, targets, reduction=reduction)
        weights = self._weights_on.get(logits.device)
        if weights is None:
            weights = self._weights_on[logits.device] = torch.as_tensor(
                self.class_weights, dtype=torch.float32, device=logits.device)
        losses = F.cross_entropy(logits, targets, reduction="none") * weights[targets]
        if reduction == "mean":
            return losses.mean()
        return losses.sum() if reduction == "sum" else losses

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
