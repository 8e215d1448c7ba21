"""A generated 120-class evaluation: groups of classes confused with each other, as a real
fine-grained dataset has (terriers with terriers), under names in alphabetical order that
hides the groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clearclass.evaluation import Evaluation
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
