"""Out-of-sample probabilities: no photo is judged by a head that saw it."""

from __future__ import annotations

import numpy as np
import pytest

from clearclass.advice.out_of_sample import out_of_sample_probabilities, usable_folds


def test_a_head_that_saw_the_photo_would_memorise_it_the_out_of_sample_one_cannot():
    # Noise with random labels: 200 dimensions for 120 photos, so a head fitted on all of
    # them separates them perfectly; judged out of sample it is at chance.
    rng = np.random.default_rng(0)
    features = rng.normal(size=(120, 200))
    targets = rng.integers(0, 2, size=120)
    from sklearn.linear_model import LogisticRegression

    in_sample = LogisticRegression(max_iter=2000).fit(features, targets)
    assert (in_sample.predict(features) == targets).mean() == 1.0
    probabilities = out_of_sample_probabilities(features, targets, classes=2)
    assert probabilities.shape == (120, 2)
    assert np.allclose(probabilities.sum(1), 1.0)
    assert (probabilities.argmax(1) == targets).mean() < 0.7


def test_a_swapped_label_has_the_lowest_self_confidence():
    rng = np.random.default_rng(1)
    centres = rng.normal(scale=6, size=(3, 16))
    targets = np.repeat(np.arange(3), 30)
    features = centres[targets] + rng.normal(size=(90, 16))
    given = targets.copy()
    given[[5, 40]] = [2, 0]  # two photos labelled as another class
    probabilities = out_of_sample_probabilities(features, given, classes=3)
    self_confidence = probabilities[np.arange(90), given]
    assert set(np.argsort(self_confidence)[:2]) == {5, 40}
    assert (probabilities.argmax(1) == targets).mean() == 1.0


def test_a_class_of_one_photo_and_a_class_without_photos():
    rng = np.random.default_rng(2)
    targets = np.array([0] * 20 + [1] * 20 + [2])  # class 3: none
    features = rng.normal(size=(41, 4)) + targets[:, None] * 5
    with np.errstate(all="raise"):
        probabilities = out_of_sample_probabilities(features, targets, classes=4)
    assert probabilities.shape == (41, 4)
    assert (probabilities[:, 3] == 0).all()  # never a class no head was shown
    assert probabilities[40, 2] == 0  # its only photo was held out: unseen by that head


def test_one_class_is_refused():
    with pytest.raises(ValueError, match="at least 2 classes"):
        out_of_sample_probabilities(np.zeros((5, 3)), np.zeros(5, dtype=int), classes=1)


def test_multi_label_rows_come_from_a_binary_head_per_label_that_never_saw_the_photo():
    rng = np.random.default_rng(0)
    truth = (rng.random((90, 3)) < 0.5).astype(np.int64)
    features = truth @ rng.normal(scale=4, size=(3, 10)) + rng.normal(size=(90, 10))
    given = truth.copy()
    given[4] = 1 - truth[4]  # every label of one photo wrong
    probabilities = out_of_sample_probabilities(features, given, 3)
    assert probabilities.shape == (90, 3)
    assert ((probabilities >= 0.5) == truth.astype(bool)).mean() > 0.9
    # Out of sample: the head that judged photo 4 never saw its wrong labels.
    assert ((probabilities[4] >= 0.5) == truth[4].astype(bool)).all()
    assert usable_folds(given) == 5
    rare = given.copy()
    rare[:, 2] = 0
    rare[[0, 1], 2] = 1  # a label on 2 photos: 2 folds, the rarest label spread over both
    assert usable_folds(rare) == 2
    assert out_of_sample_probabilities(features, rare, 3).shape == (90, 3)
    with pytest.raises(ValueError, match="a label that some photos have and others not"):
        out_of_sample_probabilities(features, np.ones((90, 3), np.int64), 3)
