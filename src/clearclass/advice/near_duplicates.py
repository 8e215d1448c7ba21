"""Photos that look the same to the model: near duplicates in feature space.

As cleanlab's Datalab does (`NearDuplicateIssueManager`, cleanlab 2.9): each photo's
nearest neighbours (cosine distance, Datalab's metric for features), and a pair is a near
duplicate when their distance is under 0.13 (Datalab's threshold) times the median
distance from a photo to its nearest one. This finds copies that pHash misses (a crop, a
mirror, a colour change) and judges them as the network sees them. Datalab returns sets
per photo; here each pair once, as `clean` lists them beside the pHash pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEIGHBOURS = 10  # Datalab's k
DATALAB_THRESHOLD = 0.13  # Datalab's NearDuplicateIssueManager default
EPSILON = 1e-6  # cleanlab's floor on the median distance (cleanlab.internal.constants)


@dataclass(frozen=True)
class NearDuplicate:
    """Two rows of the features given (`first` < `second`) and their cosine similarity."""

    first: int
    second: int
    similarity: float


def find_near_duplicates(features: np.ndarray, neighbours: int = NEIGHBOURS,
                         threshold: float = DATALAB_THRESHOLD) -> list[NearDuplicate]:
    """Pairs of photos whose features are nearly the same, most similar first.

    Example:
        rng = np.random.default_rng(0)
        features = rng.normal(size=(40, 16))
        features[39] = features[3] + rng.normal(scale=1e-3, size=16)  # a jittered copy
        print(find_near_duplicates(features)[0])  # NearDuplicate(first=3, second=39, ...)
    """
    features = np.asarray(features, dtype=np.float64)
    count = len(features)
    if count < 2:
        return []
    from sklearn.neighbors import NearestNeighbors

    k = min(neighbours, count - 1)
    metric = "cosine" if features.shape[1] > 3 else "euclidean"
    search = NearestNeighbors(n_neighbors=k + 1, metric=metric).fit(features)
    distances, indices = search.kneighbors(features)
    distances = np.clip(np.nan_to_num(distances, nan=1.0), 0, None)
    # Each photo's nearest other photo (its own row may come second after an identical one).
    others = indices != np.arange(count)[:, None]
    nearest = np.array([d[o][0] for d, o in zip(distances, others)])
    # Datalab's floor on the median: identical features everywhere still make pairs.
    limit = threshold * max(float(np.median(nearest)), EPSILON)
    pairs: dict[tuple[int, int], float] = {}
    for i in range(count):
        for distance, j in zip(distances[i], indices[i]):
            if j != i and distance < limit:
                pairs.setdefault((min(i, int(j)), max(i, int(j))), float(distance))
    similarity = (lambda d: 1.0 - d) if metric == "cosine" else (lambda d: 1.0 / (1.0 + d))
    found = [NearDuplicate(a, b, similarity(d)) for (a, b), d in pairs.items()]
    return sorted(found, key=lambda p: (-p.similarity, p.first, p.second))
