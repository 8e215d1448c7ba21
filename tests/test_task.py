"""task.py: the loss a run trains with, --balance weights included (issue 23), and the
multi-label task: its loss, scores, thresholds and label cells (issue 25)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from clearclass.task import (
    SINGLE_LABEL,
    MultiLabel,
    average_precisions,
    balanced_class_weights,
    best_thresholds,
    multi_label_scores,
    precision_recall_curve,
    split_labels,
)

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


# --- several labels per photo (issue 25) ----------------------------------------------------

def _random_multi_label(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Targets (every label with a positive) and probabilities with ties, as rounding makes."""
    rng = np.random.default_rng(seed)
    n, labels = int(rng.integers(3, 60)), int(rng.integers(2, 7))
    targets = rng.random((n, labels)) < 0.35
    targets[0] = True
    probabilities = np.round(rng.random((n, labels)) * rng.choice([1.0, 0.4]),
                             int(rng.choice([1, 3])))
    return targets, probabilities


@pytest.mark.parametrize("seed", range(40))
def test_multi_label_scores_are_scikit_learns(seed):
    from sklearn.metrics import average_precision_score, f1_score

    targets, probabilities = _random_multi_label(seed)
    scores = multi_label_scores(probabilities, targets, 0.5)
    decided = probabilities >= 0.5
    assert scores["accuracy"] == pytest.approx((decided == targets).mean())
    assert scores["f1_micro"] == pytest.approx(
        f1_score(targets, decided, average="micro", zero_division=0))
    assert scores["f1_macro"] == pytest.approx(
        f1_score(targets, decided, average="macro", zero_division=0))
    assert scores["mean_ap"] == pytest.approx(
        average_precision_score(targets, probabilities, average="macro"))
    np.testing.assert_allclose(
        average_precisions(targets, probabilities),
        [average_precision_score(targets[:, j], probabilities[:, j])
         for j in range(targets.shape[1])])


def test_average_precision_is_nan_for_a_label_without_positives_and_left_out_of_the_mean():
    targets = np.array([[1, 0], [0, 0], [1, 0]], dtype=bool)
    probabilities = np.array([[0.9, 0.2], [0.1, 0.7], [0.8, 0.1]])
    precisions = average_precisions(targets, probabilities)
    assert precisions[0] == 1.0 and np.isnan(precisions[1])
    assert multi_label_scores(probabilities, targets)["mean_ap"] == 1.0


@pytest.mark.parametrize("seed", range(40))
def test_auto_thresholds_give_each_label_its_best_f1(seed):
    from sklearn.metrics import f1_score

    targets, probabilities = _random_multi_label(seed)
    thresholds = best_thresholds(probabilities, targets)
    for j, threshold in enumerate(thresholds):
        column, truth = probabilities[:, j], targets[:, j]
        best = max(f1_score(truth, column >= t, zero_division=0)
                   for t in np.r_[column, 0.0, 1.01])
        assert f1_score(truth, column >= threshold, zero_division=0) == pytest.approx(best)
        assert 0 <= threshold <= 1
        # Between two photos' scores, never on one (0 only: every photo has the label).
        assert threshold not in column or threshold == 0


def test_a_label_without_positives_keeps_the_default_threshold_and_perfect_ones_stay_central():
    targets = np.array([[1, 0], [0, 0], [1, 0], [0, 0]], dtype=bool)
    probabilities = np.array([[0.9, 0.2], [0.1, 0.7], [0.8, 0.1], [0.2, 0.3]])
    first, second = best_thresholds(probabilities, targets, default=0.5)
    assert second == 0.5
    assert 0.2 < first < 0.8 and first == pytest.approx(0.5)  # midway of 0.2 and 0.8


def test_the_multi_label_loss_is_fastais_flat_binary_cross_entropy_and_splits_like_one():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 5, generator=generator) * 3
    targets = (torch.rand(8, 5, generator=generator) > 0.5).long()
    task = MultiLabel()
    assert torch.allclose(task.loss(logits, targets),
                          F.binary_cross_entropy_with_logits(logits, targets.float()))
    chunked = (task.loss(logits[:3], targets[:3]) * 3 / 8
               + task.loss(logits[3:], targets[3:]) * 5 / 8)
    assert torch.allclose(chunked, task.loss(logits, targets))
    assert torch.allclose(task.loss(logits, targets, reduction="sum") / 8,
                          task.loss(logits, targets))
    # accuracy_multi: the share of (photo, label) pairs decided right at the threshold
    right = ((torch.sigmoid(logits) >= 0.5) == targets.bool()).float().mean()
    assert torch.allclose(task.correct(logits, targets) / 8, right)
    with_thresholds = MultiLabel([0.1, 0.9, 0.5, 0.5, 0.3])
    decided = torch.sigmoid(logits) >= torch.tensor([0.1, 0.9, 0.5, 0.5, 0.3])
    assert torch.allclose(with_thresholds.correct(logits, targets) / 8,
                          (decided == targets.bool()).float().mean())


def test_sigmoid_probabilities_are_stable_and_decide_per_label_threshold():
    task = MultiLabel([0.5, 0.9, 0.5])
    with np.errstate(over="raise", invalid="raise"):  # no overflow for large logits
        probabilities = task.probabilities(np.array([[-1000.0, 0.0, 1000.0], [3.0, 2.0, -3.0]]))
    np.testing.assert_allclose(probabilities[0], [0.0, 0.5, 1.0])
    np.testing.assert_allclose(probabilities[1], 1 / (1 + np.exp(-np.array([3.0, 2.0, -3.0]))))
    assert task.decide(probabilities).tolist() == [[False, False, True], [True, False, False]]


@pytest.mark.parametrize(("cell", "delimiter", "labels"), [
    ("dog;cat", ";", ("dog", "cat")),
    (" dog ; ;cat;dog; ", ";", ("dog", "cat")),  # stripped, empty pieces and repeats dropped
    ("", ";", ()),
    ("dog  cat\tbird", None, ("dog", "cat", "bird")),  # fastai's space-separated labels
    ("dog cat", " ", ("dog", "cat")),
    ("golden retriever|beagle", "|", ("golden retriever", "beagle")),
])
def test_a_label_cell_splits_into_its_labels(cell, delimiter, labels):
    assert split_labels(cell, delimiter) == labels


def test_a_multi_label_head_starts_each_label_at_its_share_of_the_photos():
    targets = np.array([[1, 0, 1], [1, 0, 0], [1, 0, 0], [1, 0, 1]])
    bias = MultiLabel().initial_bias(targets)
    assert np.isfinite(bias).all()  # a label on every photo, or none, stays finite
    shares = 1 / (1 + np.exp(-bias))
    np.testing.assert_allclose(shares, [4 / 5, 1 / 5, 0.5])  # clipped to 1/(n+1) .. n/(n+1)
    from clearclass.model import create_model, set_head_bias

    model, _ = create_model("test_resnet", 3, pretrained=False)
    set_head_bias(model, bias)
    np.testing.assert_allclose(model.get_classifier().bias.detach().numpy(), bias, rtol=1e-6)
    assert not model.get_classifier().weight.detach().any()  # the weights still start at 0


@pytest.mark.parametrize("seed", range(10))
def test_the_precision_recall_curve_is_scikit_learns(seed):
    """Ties counted together: the points scikit-learn gives, in the other order, without its
    closing (precision 1, recall 0)."""
    from sklearn.metrics import precision_recall_curve as sklearn_curve

    targets, probabilities = _random_multi_label(seed)
    for j in range(targets.shape[1]):
        precision, recall, thresholds = precision_recall_curve(targets[:, j], probabilities[:, j])
        expected = sklearn_curve(targets[:, j], probabilities[:, j])
        np.testing.assert_allclose(precision, expected[0][:-1][::-1])
        np.testing.assert_allclose(recall, expected[1][:-1][::-1])
        np.testing.assert_allclose(thresholds, expected[2][::-1])
    with pytest.raises(ValueError, match="no photo has the label"):
        precision_recall_curve(np.zeros(3, dtype=bool), np.array([0.1, 0.2, 0.3]))
