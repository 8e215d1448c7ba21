"""task.py: the loss a run trains with, --balance weights included (issue 23)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from clearclass.task import SINGLE_LABEL, balanced_class_weights

TARGETS = [0] * 50 + [1] * 5 + [2] * 20 + [3]


def test_class_weights_are_scikit_learns_balanced_weights_and_average_one_per_photo():
    ours = balanced_class_weights(TARGETS, 4)
    theirs = compute_class_weight("balanced", classes=np.arange(4), y=np.array(TARGETS))
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    assert ours[TARGETS].mean() == pytest.approx(1.0)  # the loss keeps its scale


def test_a_class_without_training_photos_is_left_out_of_the_weights():
    ours = balanced_class_weights([0, 0, 0, 2], 3)
    theirs = compute_class_weight("balanced", classes=np.array([0, 2]), y=np.array([0, 0, 0, 2]))
    assert ours[1] == 0 and np.allclose(ours[[0, 2]], theirs)


def test_the_weighted_loss_weighs_each_photo_by_its_class_and_splits_like_the_plain_one():
    logits = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 0, 1, 2, 3, 0, 2, 1])
    task = SINGLE_LABEL.for_training("weights", TARGETS, 4)
    weights = torch.tensor(balanced_class_weights(TARGETS, 4), dtype=torch.float32)
    each = F.cross_entropy(logits, targets, reduction="none") * weights[targets]
    assert torch.allclose(task.loss(logits, targets), each.mean())
    assert torch.allclose(task.loss(logits, targets, reduction="sum"), each.sum())
    # Chunks (CPU micro-batches, torchrun shares) weighted by their size give the whole.
    chunked = (task.loss(logits[:3], targets[:3]) * 3 / 8
               + task.loss(logits[3:], targets[3:]) * 5 / 8)
    assert torch.allclose(chunked, task.loss(logits, targets))
    # What validation reports: the plain loss, comparable across --balance.
    assert torch.equal(task.loss(logits, targets, reduction="sum", weighted=False),
                       F.cross_entropy(logits, targets, reduction="sum"))


@pytest.mark.parametrize("balance", ["none", "sampler"])
def test_other_balance_modes_train_on_the_plain_loss(balance):
    assert SINGLE_LABEL.for_training(balance, TARGETS, 4) is SINGLE_LABEL
    assert SINGLE_LABEL.class_weights is None
