"""What a classification task is, in one place: how a network's outputs become a loss to
train on, a count of right answers, scores, probabilities and a decision, and how a labels
cell becomes a photo's labels.

The loop starts the head at `initial_bias`, trains with `loss`, measures with `correct`
(and, for a task with `score_names`, `epoch_scores` on every validation photo's
`torch_probabilities`, which the ONNX export also puts in its graph); prediction (with or
without PyTorch) turns logits into `probabilities` and `decide`s. There are two tasks, each
a class with these methods: `SingleLabel` (one class per photo: softmax, cross-entropy, the
most likely class) and `MultiLabel` (a set of labels per photo, maybe empty: sigmoid, binary
cross-entropy, every label over its threshold). `TASKS` names them; `task_named` gives
one; a third task is a third class, not a change to the loop. How a labels CSV's cell
becomes a photo's labels is `split_labels`; `multi_label_scores` and `best_thresholds`
measure and tune the multi-label decision, `precision_recall_curve` draws it for every
threshold.

`--balance weights` lives here too: `for_training` gives the task the class weights of the
training photos, and `loss` weighs each photo's cross-entropy by its class's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from clearclass.errors import SettingError

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
    score_names: tuple[str, ...] = ()  # what it measures besides accuracy

    def __init__(self, class_weights: np.ndarray | None = None):
        self.class_weights = class_weights  # per class, for --balance weights; None: all 1
        self._weights_on: dict = {}  # device -> class_weights as a tensor there, copied once

    def for_training(self, balance: str, targets: Sequence[int], classes: int) -> SingleLabel:
        """The task `train` optimises with `--balance` (BALANCE_MODES): with `weights`, its
        loss weighs each class by `balanced_class_weights` of the training `targets`."""
        if balance != "weights":
            return self
        return SingleLabel(balanced_class_weights(targets, classes))

    def initial_bias(self, targets: np.ndarray) -> np.ndarray | None:
        """The new head's starting bias; None: zero, every class equally likely."""
        return None

    def torch_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(1)

    def epoch_scores(self, accuracy: float, probabilities: np.ndarray | None,
                     targets: np.ndarray, threshold: float | None,
                     ) -> tuple[float, dict[str, float], list[float] | None]:
        """An epoch's accuracy, its other scores (`score_names`) and the thresholds the
        model decides with from now on: for one label per photo, `validate`'s accuracy."""
        return accuracy, {}, None

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


# --task: `auto` decides from the data (data.sources: a labels CSV with a row of several
# labels, or of none, is multi-label).
TASKS = ("single", "multi")
TASK_CHOICES = ("auto", *TASKS)
DEFAULT_THRESHOLD = 0.5  # fastai's accuracy_multi thresh
# What the label cells of a multi-label CSV are split on when --label-delimiter is not given:
# ';' (a CSV's cells are already separated by ',').
DEFAULT_LABEL_DELIMITER = ";"


def split_labels(cell: str, delimiter: str | None) -> tuple[str, ...]:
    """A label cell's labels: split on `delimiter` (None: any run of whitespace, as Python's
    `str.split()`), each stripped, empty pieces dropped ("dog;;cat;" is dog and cat), each
    label once, in the order first given."""
    pieces = cell.split(delimiter) if delimiter not in (None, " ") else cell.split()
    return tuple(dict.fromkeys(p.strip() for p in pieces if p.strip()))


class MultiLabel:
    """A set of labels per photo, maybe none (fastai's `MultiCategoryBlock`): an independent
    sigmoid per label, binary cross-entropy, and every label whose probability reaches its
    threshold as the answer. Targets are multi-hot rows (N x labels, 0/1)."""

    name = "multi"
    score_names = ("f1_micro", "f1_macro", "mean_ap")  # multi_label_scores, after accuracy

    def __init__(self, thresholds: Sequence[float] | float = DEFAULT_THRESHOLD):
        self.thresholds = thresholds  # one for every label, or one number for them all

    def for_training(self, balance: str, targets: Sequence, classes: int) -> MultiLabel:
        if balance != "none":  # class weights and balanced draws count one class per photo
            raise SettingError("balance", "is for one class per photo; these photos have "
                                          "several labels (or none). Drop --balance.")
        return self

    def torch_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.sigmoid()

    def epoch_scores(self, accuracy: float, probabilities: np.ndarray | None,
                     targets: np.ndarray, threshold: float | None,
                     ) -> tuple[float, dict[str, float], list[float]]:
        """fastai's accuracy_multi and `score_names` over every validation photo's
        `probabilities`, at `threshold` for every label, or (None: --threshold auto) at each
        label's best for F1 on these photos (`best_thresholds`), which the model then
        keeps."""
        thresholds = ([threshold] * targets.shape[1] if threshold is not None
                      else best_thresholds(probabilities, targets))
        scores = multi_label_scores(probabilities, targets, thresholds)
        return scores.pop("accuracy"), scores, thresholds

    def initial_bias(self, targets: np.ndarray) -> np.ndarray:
        """The head's starting logits: each label's share of the training photos, as a
        logit, so that the first predictions are the labels' frequencies instead of 0.5 for
        every label. With most labels absent from most photos, a zero head starts by calling
        every label present and spends its first steps unlearning that (measured in
        benchmarks/RESULTS.md). A label on every photo, or on none, stays finite: its share
        is taken as at most 1 - 1/(n+1), at least 1/(n+1)."""
        targets = np.asarray(targets, dtype=np.float64)
        n = len(targets)
        share = np.clip(targets.mean(0) if n else np.full(targets.shape[1], 0.5),
                        1 / (n + 1), n / (n + 1))
        return np.log(share / (1 - share))

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean",
             weighted: bool = True) -> torch.Tensor:
        """Binary cross-entropy of each photo's `logits` against its multi-hot `targets`,
        averaged over the labels (fastai's BCEWithLogitsLossFlat), so that a photo's loss
        has the same scale whatever the number of labels. `reduction` is over the photos:
        "sum" adds photos' losses up, as validation does to divide by all photos at the end."""
        import torch.nn.functional as F

        losses = F.binary_cross_entropy_with_logits(
            logits.float(), targets.float(), reduction="none").mean(1)
        if reduction == "mean":
            return losses.mean()
        return losses.sum() if reduction == "sum" else losses

    def correct(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """fastai's `accuracy_multi` numerator, per photo: the share of its labels decided
        right (over or under the threshold as the target says), summed over photos. Divided
        by the photos, it is accuracy_multi: the share of all (photo, label) pairs right."""
        import torch

        thresholds = torch.as_tensor(self.thresholds, dtype=torch.float32,
                                     device=logits.device)
        decided = torch.sigmoid(logits.float()) >= thresholds
        return (decided == targets.bool()).float().mean(1).sum()

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Each label's sigmoid, in NumPy (prediction runs without PyTorch)."""
        # exp of a negative number only: no overflow warning for large logits.
        e = np.exp(-np.abs(logits))
        return np.where(logits >= 0, 1 / (1 + e), e / (1 + e))

    def decide(self, probabilities: np.ndarray) -> np.ndarray:
        """Each row's decision: True for every label at or over its threshold."""
        return probabilities >= np.asarray(self.thresholds, dtype=probabilities.dtype)


SINGLE_LABEL = SingleLabel()
MULTI_LABEL = MultiLabel()


def task_named(name: str, thresholds: Sequence[float] | None = None) -> SingleLabel | MultiLabel:
    """The task called `name` (TASKS); a multi-label one decides with `thresholds`."""
    if name == "multi":
        return MultiLabel(DEFAULT_THRESHOLD if thresholds is None else list(thresholds))
    if name == "single":
        return SINGLE_LABEL
    raise ValueError(f"no task {name!r}; tasks: {', '.join(TASKS)}")


def ranked_counts(hits: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                  np.ndarray]:
    """One label's photos ranked by `scores`, highest first, read at each distinct score:
    the score, the photos with the label (`hits`) among those scored at least that high, and
    how many photos those are. Average precision, the precision-recall curve and the best
    F1 threshold are each read off these. Needs at least one photo."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    ranked = np.asarray(scores, dtype=np.float64)[order]
    last = np.r_[np.nonzero(np.diff(ranked))[0], len(ranked) - 1]  # end of each score
    return ranked[last], np.cumsum(np.asarray(hits, dtype=bool)[order])[last], last + 1


def average_precisions(targets: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Each label's average precision (NaN for a label with no positive photo): the mean,
    over the label's positive photos, of the precision among the photos scored at least as
    high. scikit-learn's `average_precision_score` computes the same (ties counted together,
    no interpolation; tests/test_task.py checks they agree); written out because prediction
    and training must not need scikit-learn."""
    targets = np.asarray(targets, dtype=bool)
    result = np.full(targets.shape[1], np.nan)
    for j in range(targets.shape[1]):
        positives = targets[:, j].sum()
        if not positives:
            continue
        # At each distinct score, the precision and recall of "everything scored this high".
        _, true_positives, decided = ranked_counts(targets[:, j], probabilities[:, j])
        precision = true_positives / decided
        recall_gain = np.diff(np.r_[0, true_positives]) / positives
        result[j] = float((precision * recall_gain).sum())
    return result


def precision_recall_curve(hits: np.ndarray, scores: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One label's precision and recall at every threshold that changes them: (precision,
    recall, thresholds), the thresholds the distinct `scores` from the highest down (a photo
    is given the label when its score reaches the threshold). scikit-learn's
    `precision_recall_curve` gives the same points in the other order, plus (1, 0) at the
    end. The label must be on at least one photo (`hits`), or recall has no meaning."""
    positives = int(np.asarray(hits, dtype=bool).sum())
    if not positives:
        raise ValueError("no photo has the label: its recall is undefined")
    thresholds, true_positives, decided = ranked_counts(hits, scores)
    return true_positives / decided, true_positives / positives, thresholds


def f1_scores(decided: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, float]:
    """Each label's F1 (0 for a label with neither a positive nor a decided photo, as
    scikit-learn's zero_division=0) and the micro F1 over all (photo, label) pairs."""
    decided, targets = np.asarray(decided, dtype=bool), np.asarray(targets, dtype=bool)
    tp = (decided & targets).sum(0)
    fp = (decided & ~targets).sum(0)
    fn = (~decided & targets).sum(0)
    denominator = 2 * tp + fp + fn
    per_label = np.divide(2 * tp, denominator, out=np.zeros(len(tp)), where=denominator > 0)
    total = 2 * tp.sum() + fp.sum() + fn.sum()
    return per_label, float(2 * tp.sum() / total) if total else 0.0


def multi_label_scores(probabilities: np.ndarray, targets: np.ndarray,
                       thresholds: Sequence[float] | float = DEFAULT_THRESHOLD) -> dict[str, float]:
    """What a multi-label run reports: `accuracy` (fastai's accuracy_multi at the
    thresholds), `f1_micro`, `f1_macro` (the mean of the labels' F1) and `mean_ap` (the mean
    of the labels' average precision, over the labels with a positive photo)."""
    targets = np.asarray(targets, dtype=bool)
    decided = probabilities >= np.asarray(thresholds, dtype=probabilities.dtype)
    per_label, micro = f1_scores(decided, targets)
    precisions = average_precisions(targets, probabilities)
    return {"accuracy": float((decided == targets).mean()), "f1_micro": micro,
            "f1_macro": float(per_label.mean()),
            "mean_ap": float(np.nanmean(precisions)) if np.isfinite(precisions).any()
            else float("nan")}


def best_thresholds(probabilities: np.ndarray, targets: np.ndarray,
                    default: float = DEFAULT_THRESHOLD) -> list[float]:
    """`--threshold auto`: per label, the threshold that maximises its F1 on these photos.

    Candidates are the midpoints between consecutive distinct probabilities (so a threshold
    never sits exactly on a photo's score), tried all at once from the label's precision and
    recall at each. A label with no positive photo keeps `default`: no threshold can be
    learned for it, and any would score F1 0. Ties go to the threshold closest to `default`,
    so that a label predicted perfectly is not pushed to an extreme."""
    targets = np.asarray(targets, dtype=bool)
    result = []
    for j in range(targets.shape[1]):
        positives = int(targets[:, j].sum())
        if not positives:
            result.append(float(default))
            continue
        scores, tp, decided = ranked_counts(targets[:, j], probabilities[:, j])
        f1 = 2 * tp / (decided + positives)
        # Threshold between this score and the next lower one (or below the lowest).
        below = np.r_[scores[1:], 0.0]
        candidates = (scores + below) / 2
        best = np.flatnonzero(np.isclose(f1, f1.max()))
        pick = best[np.argmin(np.abs(candidates[best] - default))]
        result.append(float(candidates[pick]))
    return result
