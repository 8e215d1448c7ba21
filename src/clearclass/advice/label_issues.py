"""Photos whose label is likely wrong: cleanlab on out-of-sample probabilities.

`cleanlab.filter.find_label_issues` (Northcutt et al., 2021) flags photos from class
probabilities that must be out of sample (`out_of_sample.out_of_sample_probabilities`): a
photo learned with a wrong label has been pulled towards it. The flagged photos are ranked
by self-confidence, the probability of their given label, least first.

Which photos are flagged is cleanlab's `filter_by`. Its default, "prune_by_noise_rate"
(confident learning: count the photos confidently in another class per pair of classes,
flag that many), flags few photos besides the swapped ones but misses many of them: on
imagewoof-2k with 80 training labels swapped (benchmarks/label_errors.py) it flagged 94
photos holding 61 of the 80, and ranked by self-confidence it is behind the trained
model's own loss. "predicted_neq_given" (every photo whose most likely class is another)
flags all the photos that are candidates at all, and on these probabilities its ranking
puts more of the swapped photos first than the in-sample loss did (a median of 86% against
81% in the first 80 over seeds 42-44, one seed behind by one photo: the "Label errors"
section of benchmarks/RESULTS.md), so it is the default here; the others stay a parameter
away.

A multi-label run's photos have a set of labels each: `find_label_set_issues` hands them
to cleanlab's multi-label filter (`cleanlab.multilabel_classification.filter`, one yes/no
question per label, the same `filter_by`) and ranks the flagged photos by cleanlab's
multi-label quality score (each label's self-confidence, the least confident weighing
most). It has not been measured on planted errors as the single-label ranking was.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelIssue:
    """One photo whose label is likely wrong; `index` is its row in the arrays given."""

    index: int
    given: int  # the class it is labelled with
    likely: int  # the most likely other class
    self_confidence: float  # the probability of `given`
    likely_probability: float  # the probability of `likely`
    # The mean probability of `likely` on the photos labelled with it: how sure these
    # heads are of that class's own photos (cleanlab's per-class confident threshold).
    likely_typical: float = 1.0


FILTER = "predicted_neq_given"  # cleanlab's filter_by; measured above


def find_label_issues(probabilities: np.ndarray, targets: np.ndarray,
                      filter_by: str = FILTER) -> list[LabelIssue]:
    """The photos cleanlab flags as mislabelled (`filter_by`, as cleanlab names its
    filters), least self-confident first.

    `probabilities` (photos x classes) should be out of sample; `targets` are the given
    class indices. Classes that no photo is labelled with are left out of the estimate (their
    probabilities are spread over the others), so a class with no training photos does not
    stop it; fewer than 2 labelled classes give no issues.

    Example:
        targets = np.repeat([0, 1, 2], 20)
        probabilities = np.full((60, 3), 0.05)
        probabilities[np.arange(60), targets] = 0.9
        probabilities[7] = [0.02, 0.95, 0.03]  # labelled 0, looks like 1
        issues = find_label_issues(probabilities, targets)
        print(issues[0].index, issues[0].likely)  # 7 1
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if len(targets) != len(probabilities):
        raise ValueError(f"{len(targets)} targets for {len(probabilities)} rows of "
                         "probabilities")
    present = np.unique(targets)
    if len(present) < 2:
        return []
    # cleanlab wants classes numbered 0..K-1, each labelled at least once, and rows that
    # sum to 1: keep the labelled classes' columns and renormalise.
    kept = probabilities[:, present]
    sums = kept.sum(axis=1, keepdims=True)
    kept = np.where(sums > 0, kept / np.where(sums > 0, sums, 1.0), 1.0 / len(present))
    labels = np.searchsorted(present, targets)
    from cleanlab.count import get_confident_thresholds
    from cleanlab.filter import find_label_issues as cleanlab_find

    with warnings.catch_warnings():
        # "May not flag all label issues in class: 0, it has too few examples": a tiny class
        # is judged as well as it can be; the caller says when there are too few photos.
        warnings.simplefilter("ignore", UserWarning)
        ranked = cleanlab_find(labels, kept, filter_by=filter_by,
                               return_indices_ranked_by="self_confidence", n_jobs=1)
        typical = np.ones(probabilities.shape[1])
        typical[present] = get_confident_thresholds(labels, kept)
    issues = []
    for i in np.asarray(ranked, dtype=np.int64):
        row = probabilities[i].copy()
        given = int(targets[i])
        row[given] = -1.0
        likely = int(row.argmax())
        issues.append(LabelIssue(int(i), given, likely, float(probabilities[i, given]),
                                 float(probabilities[i, likely]), float(typical[likely])))
    return issues


def in_sample_ranking(probabilities: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Row indices by the loss of the given label, highest first: 1 - p(label) from the
    model's own probabilities (fastai's top losses); what `clean` ranked by before, kept to
    compare with (benchmarks/label_errors.py).

    Example:
        print(in_sample_ranking(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 0])))  # [1 0]
    """
    probabilities = np.asarray(probabilities)
    given = probabilities[np.arange(len(probabilities)), np.asarray(targets)]
    return np.argsort(given, kind="stable")


@dataclass(frozen=True)
class LabelSetIssue:
    """One photo whose set of labels is likely wrong (multi-label); `index` is its row in
    the arrays given, label numbers are columns of the probabilities."""

    index: int
    quality: float  # cleanlab's quality score of the photo's labels, 0-1: low, likely wrong
    given: tuple[int, ...]  # the labels it has
    # The labels the heads decide otherwise: one it has at a probability under 0.5, or one
    # it lacks at 0.5 or more; the most disputed first.
    disputed: tuple[int, ...]
    # For each disputed label, how sure the heads are of such photos: the mean probability
    # of the label on the photos with it (when the heads would add it), or the mean of
    # 1 - that on the photos without it (when they would remove it); cleanlab's confident
    # thresholds of the label's yes/no question.
    typical: tuple[float, ...]


def find_label_set_issues(probabilities: np.ndarray, targets: np.ndarray,
                          filter_by: str = FILTER,
                          labels: Sequence[int] | None = None) -> list[LabelSetIssue]:
    """The photos cleanlab flags as labelled with a wrong set of labels (multi-label), least
    likely first (cleanlab's multi-label quality score).

    `probabilities` (photos x labels, each its own yes/no probability) should be out of
    sample; `targets` are the multi-hot rows given. Labels that every photo has, or none,
    are left out (there is nothing to tell apart; cleanlab refuses them), so is a set with
    no label that some photos have and others not (no issues). `labels`: the labels to
    judge (default: all); the others are neither flagged nor disputed.

    Example:
        targets = np.array([[1, 0], [0, 1], [1, 1], [0, 0]] * 10)
        probabilities = np.where(targets == 1, 0.9, 0.1)
        probabilities[5] = [0.95, 0.2]  # labelled [0, 1], looks like [1, 0]
        issues = find_label_set_issues(probabilities, targets)
        print(issues[0].index, issues[0].disputed)  # 5 (0, 1)
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if targets.shape != probabilities.shape:
        raise ValueError(f"targets of shape {targets.shape} for probabilities of shape "
                         f"{probabilities.shape}")
    with_ = targets.sum(axis=0)
    chosen = np.zeros(targets.shape[1], dtype=bool)
    chosen[list(range(targets.shape[1])) if labels is None else list(labels)] = True
    varied = np.flatnonzero((with_ > 0) & (with_ < len(targets)) & chosen)
    if not len(varied):
        return []
    kept, given = probabilities[:, varied], targets[:, varied]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tiny labels, as find_label_issues
        if len(varied) == 1:  # one yes/no question: cleanlab's multi-label wants two
            from cleanlab.filter import find_label_issues as cleanlab_find
            from cleanlab.rank import get_label_quality_scores

            binary = np.column_stack([1 - kept[:, 0], kept[:, 0]])
            ranked = cleanlab_find(given[:, 0], binary, filter_by=filter_by,
                                   return_indices_ranked_by="self_confidence", n_jobs=1)
            quality = get_label_quality_scores(given[:, 0], binary)
        else:
            from cleanlab.multilabel_classification import filter as multi_label_filter
            from cleanlab.multilabel_classification.rank import get_label_quality_scores

            sets = [list(np.flatnonzero(row)) for row in given]
            ranked = multi_label_filter.find_label_issues(
                sets, kept, filter_by=filter_by, return_indices_ranked_by="self_confidence",
                n_jobs=1)
            quality = get_label_quality_scores(sets, kept)
    has = targets.astype(bool)
    # How sure the heads typically are that a photo has each label / lacks it.
    sure_with = np.array([probabilities[has[:, j], j].mean() if with_[j] else 1.0
                          for j in range(targets.shape[1])])
    sure_without = np.array([(1 - probabilities[~has[:, j], j]).mean()
                             if with_[j] < len(targets) else 1.0
                             for j in range(targets.shape[1])])
    issues = []
    for i in np.asarray(ranked, dtype=np.int64):
        row = probabilities[i]
        against = np.where(has[i], 0.5 - row, row - 0.5)  # > 0 where the heads disagree
        disputed = [int(j) for j in np.argsort(-against, kind="stable") if against[j] >= 0
                    and not (has[i, j] and row[j] == 0.5) and j in varied]
        issues.append(LabelSetIssue(
            int(i), float(quality[i]), tuple(int(j) for j in np.flatnonzero(has[i])),
            tuple(disputed), tuple(float(sure_without[j] if has[i, j] else sure_with[j])
                                   for j in disputed)))
    return sorted(issues, key=lambda issue: (issue.quality, issue.index))
