"""A generated 120-class evaluation: groups of classes confused with each other, as a real
fine-grained dataset has (terriers with terriers), under names in alphabetical order that
hides the groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clearclass.evaluation import Evaluation, MultiLabelEvaluation
from tests.conftest import make_photo

GROUP = 4  # classes per group of look-alikes


def confused_groups(n: int = 120, per_class: int = 20, seed: int = 0,
                    photos: Path | None = None) -> tuple[Evaluation, np.ndarray]:
    """An Evaluation of n classes and the group of each class; 10% of a class's photos go to
    another class of its group, 1% anywhere. With `photos`, small generated photos are
    written there (one per 10 entries, shared), else the paths do not exist."""
    rng = np.random.default_rng(seed)
    group = rng.permutation(n) // GROUP
    names = [f"breed {i:03d}" + (" with a rather long name" if i % 9 == 0 else "")
             for i in range(n)]
    targets = np.repeat(np.arange(n), per_class)
    predictions = targets.copy()
    for k, t in enumerate(targets):
        draw = rng.random()
        if draw < 0.10:
            mates = np.nonzero((group == group[t]) & (np.arange(n) != t))[0]
            predictions[k] = rng.choice(mates)
        elif draw < 0.11:
            predictions[k] = rng.integers(n)
    probabilities = np.full((len(targets), n), 0.2 / (n - 1))
    probabilities[np.arange(len(targets)), predictions] = 0.8
    paths = []
    for k in range(len(targets)):
        path = (photos or Path("/nonexistent")) / f"p{k % 200:03d}.jpg"
        if photos is not None and not path.exists():
            make_photo(path, colour=tuple(int(c) for c in rng.integers(0, 255, 3)),
                       size=(120, 90), seed=k)
        paths.append(path)
    return Evaluation([f"id{i:03d}" for i in range(n)], names, paths, targets,
                      probabilities), group


def multi_label_groups(n: int = 120, photos_count: int = 600, seed: int = 0,
                       photos: Path | None = None, names: list[str] | None = None,
                       ) -> tuple[MultiLabelEvaluation, np.ndarray]:
    """A MultiLabelEvaluation of n labels and the group of each: each photo has 1 to 3
    labels; 10% of its labels are missed, and then (mostly) a label of the same group is
    given instead; 1% of the other labels are given wrongly. The last label is on no photo
    (its recall and average precision are undefined). Thresholds differ per label. With
    `photos`, small generated photos are written there (one per 10 photos, shared), else the
    paths do not exist; `names` replaces the labels' display names."""
    rng = np.random.default_rng(seed)
    group = rng.permutation(n) // GROUP
    targets = np.zeros((photos_count, n), dtype=bool)
    for row in targets:
        row[rng.choice(n - 1, rng.integers(1, 4), replace=False)] = True
    thresholds = np.round(rng.uniform(0.3, 0.7, n), 2)
    decided = targets.copy()
    for k, row in enumerate(targets):
        for j in np.flatnonzero(row):
            if rng.random() < 0.10:
                decided[k, j] = False
                mates = np.nonzero((group == group[j]) & ~row)[0]
                if len(mates) and rng.random() < 0.8:
                    decided[k, rng.choice(mates)] = True
    decided |= (rng.random(targets.shape) < 0.01) & ~targets
    # A probability on the right side of each label's threshold, by a random margin.
    margin = rng.uniform(0.01, 0.29, targets.shape)
    probabilities = np.where(decided, thresholds + margin, thresholds - margin)
    paths = []
    for k in range(photos_count):
        path = (photos or Path("/nonexistent")) / f"p{k % 60:03d}.jpg"
        if photos is not None and not path.exists():
            make_photo(path, colour=tuple(int(c) for c in rng.integers(0, 255, 3)),
                       size=(120, 90), seed=k)
        paths.append(path)
    label_names = names or [f"label {i:03d}" + (" with a rather long name" if i % 9 == 0 else "")
                            for i in range(n)]
    return MultiLabelEvaluation([f"id{i:03d}" for i in range(n)], label_names, paths, targets,
                                probabilities, thresholds), group
