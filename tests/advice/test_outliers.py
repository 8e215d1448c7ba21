"""Outliers: a photo far from every class in feature space is flagged, as Datalab does."""

from __future__ import annotations

import numpy as np

from clearclass.advice.outliers import find_outliers


def test_a_far_point_is_the_first_outlier():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=4, size=(3, 16)) + 10
    features = np.concatenate([centres[np.repeat(np.arange(3), 30)] + rng.normal(size=(90, 16)),
                               -np.ones((1, 16)) * 10])
    found = find_outliers(features)
    assert found.ranked[0] == 90
    assert found.ratio[90] > 3 and found.distance[90] > found.threshold
    assert found.score[90] == found.score.min() and found.score.min() >= 0
    assert found.is_outlier.sum() <= 5  # a few at the edges of the clusters at most


def test_identical_tiny_and_empty_inputs():
    same = find_outliers(np.ones((6, 8)))
    assert not same.is_outlier.any()  # all alike: nothing is unlike the rest
    assert not find_outliers(np.ones((2, 8))).is_outlier.any()
    assert len(find_outliers(np.zeros((0, 8))).ranked) == 0
    with np.errstate(all="raise"):
        assert len(find_outliers(np.zeros((5, 8))).is_outlier) == 5  # no direction at all
