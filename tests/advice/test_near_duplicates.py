"""Near duplicates in feature space: a jittered copy is paired with its original, once."""

from __future__ import annotations

import numpy as np

from clearclass.advice.near_duplicates import find_near_duplicates


def test_a_jittered_copy_is_found_once():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 32))
    features[59] = features[7] + rng.normal(scale=1e-3, size=32)
    found = find_near_duplicates(features)
    assert [(p.first, p.second) for p in found] == [(7, 59)]
    assert found[0].similarity > 0.99


def test_all_identical_and_tiny_inputs():
    pairs = find_near_duplicates(np.ones((4, 8)))
    assert {(p.first, p.second) for p in pairs} == {(0, 1), (0, 2), (0, 3), (1, 2), (1, 3),
                                                     (2, 3)}
    assert find_near_duplicates(np.ones((1, 8))) == []
    assert find_near_duplicates(np.zeros((0, 8))) == []
