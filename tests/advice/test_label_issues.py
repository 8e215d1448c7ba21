"""Label issues: cleanlab on out-of-sample probabilities puts the flipped labels first."""

from __future__ import annotations

import numpy as np

from clearclass.advice.label_issues import find_label_issues, in_sample_ranking
from clearclass.advice.out_of_sample import out_of_sample_probabilities


def _clusters(seed: int = 0, per_class: int = 30, classes: int = 3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=5, size=(classes, 12))
    truth = np.repeat(np.arange(classes), per_class)
    return rng, centres[truth] + rng.normal(size=(len(truth), 12)), truth


def test_flipped_labels_are_flagged_first_with_their_true_class():
    rng, features, truth = _clusters()
    given = truth.copy()
    flipped = [3, 41, 77]
    given[flipped] = (truth[flipped] + 1) % 3
    probabilities = out_of_sample_probabilities(features, given, classes=3)
    issues = find_label_issues(probabilities, given)
    assert {i.index for i in issues[:3]} == set(flipped)
    for issue in issues[:3]:
        assert issue.given == given[issue.index] and issue.likely == truth[issue.index]
        assert issue.self_confidence < 0.2 < issue.likely_probability
    confidences = [i.self_confidence for i in issues]
    assert confidences == sorted(confidences)  # ranked by self-confidence


def test_a_class_without_photos_and_one_class_only():
    targets = np.array([0] * 10 + [2] * 10)  # class 1: none
    probabilities = np.full((20, 3), 0.2)
    probabilities[np.arange(20), targets] = 0.7
    probabilities[:, 1] = 0.1
    probabilities[4] = [0.05, 0.05, 0.9]  # labelled 0, looks like 2
    issues = find_label_issues(probabilities, targets)
    assert [(i.index, i.given, i.likely) for i in issues] == [(4, 0, 2)]
    assert find_label_issues(probabilities[:10], targets[:10]) == []  # one class: nothing


def test_tiny_classes_do_not_crash():
    probabilities = np.array([[0.6, 0.4], [0.3, 0.7], [0.9, 0.1]])
    assert isinstance(find_label_issues(probabilities, np.array([1, 0, 0])), list)
    assert find_label_issues(np.zeros((0, 2)), np.zeros(0, dtype=int)) == []


def test_the_in_sample_ranking_is_by_loss():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    assert in_sample_ranking(probabilities, np.array([0, 0, 0])).tolist() == [1, 2, 0]
