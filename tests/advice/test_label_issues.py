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


# --- several labels per photo (issue 25) ------------------------------------------------------

def _label_sets(seed: int = 0, photos: int = 120, labels: int = 4):
    """Features that are the sum of a direction per label the photo has, plus noise."""
    rng = np.random.default_rng(seed)
    truth = (rng.random((photos, labels)) < 0.4).astype(np.int64)
    directions = rng.normal(scale=4, size=(labels, 12))
    return rng, truth @ directions + rng.normal(size=(photos, 12)), truth


def test_a_label_added_or_taken_away_is_flagged_first_and_disputed():
    from clearclass.advice.label_issues import find_label_set_issues

    _, features, truth = _label_sets()
    given = truth.copy()
    added = int(np.flatnonzero(truth[:, 2] == 0)[0])
    removed = int(np.flatnonzero(truth[:, 1] == 1)[3])
    given[added, 2], given[removed, 1] = 1, 0
    probabilities = out_of_sample_probabilities(features, given, 4)
    issues = find_label_set_issues(probabilities, given)
    assert {i.index for i in issues[:2]} == {added, removed}
    by_index = {i.index: i for i in issues}
    assert by_index[added].disputed[0] == 2 and 2 in by_index[added].given
    assert by_index[removed].disputed[0] == 1 and 1 not in by_index[removed].given
    assert all(0 <= i.quality <= 1 for i in issues)
    assert [i.quality for i in issues] == sorted(i.quality for i in issues)
    assert all(0 < t <= 1 for i in issues for t in i.typical)


def test_labels_that_do_not_vary_are_left_out_and_one_label_is_judged_alone():
    from clearclass.advice.label_issues import find_label_set_issues

    _, features, truth = _label_sets(seed=1)
    truth[:, 3] = 1  # on every photo: nothing to tell apart, cleanlab refuses it
    truth[:, 0] = 0  # on none
    given = truth.copy()
    flipped = int(np.flatnonzero(truth[:, 1] == 1)[0])
    given[flipped, 1] = 0
    probabilities = out_of_sample_probabilities(features, given, 4)
    issues = find_label_set_issues(probabilities, given)
    assert flipped in {i.index for i in issues[:2]}
    assert not any(j in (0, 3) for i in issues for j in i.disputed if j not in i.given
                   and probabilities[i.index, j] < 0.5)
    # One label that varies: cleanlab's yes/no filter on it, the same answer.
    alone = find_label_set_issues(probabilities[:, [1, 3]], given[:, [1, 3]])
    assert flipped in {i.index for i in alone[:2]}
    assert find_label_set_issues(np.full((5, 2), 0.5), np.ones((5, 2), int)) == []
