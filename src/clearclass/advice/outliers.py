"""Photos unlike any class (a cat among the dogs, a screenshot, a blank photo), found by
their distance to their nearest photos in the network's feature space.

As cleanlab's Datalab does (`OutlierIssueManager`, cleanlab 2.9): each photo's mean cosine
distance to its k = 10 nearest other photos; a photo is an outlier when that mean exceeds
Q3 + (1 / 0.37037 - 1) x IQR of the means over all photos (Datalab's default threshold for
features, a Tukey fence at about 1.7 IQR), and its score is cleanlab's
`transform_distances_to_scores` (exp(-mean / median mean)), near 0 for the most unusual.
Datalab builds the neighbour graph itself from a `Datalab(data)` object; here scikit-learn's
`NearestNeighbors` on the array, which is the index Datalab uses, without the dataset
wrapper. The cosine metric is Datalab's choice for features of more than 3 dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEIGHBOURS = 10  # Datalab's k
DATALAB_THRESHOLD = 0.37037  # Datalab's DEFAULT_THRESHOLDS["features"]


@dataclass(frozen=True)
class Outliers:
    """Per photo (rows of the features given): the mean distance to its nearest photos,
    how many times the median of those means it is (`ratio`), cleanlab's score (0 to 1,
    low = unusual) and whether it is flagged; `threshold` is the flagging distance."""

    distance: np.ndarray
    ratio: np.ndarray
    score: np.ndarray
    is_outlier: np.ndarray
    threshold: float

    @property
    def ranked(self) -> np.ndarray:
        """The flagged rows, most unusual first."""
        flagged = np.flatnonzero(self.is_outlier)
        return flagged[np.argsort(-self.distance[flagged], kind="stable")]


def find_outliers(features: np.ndarray, neighbours: int = NEIGHBOURS) -> Outliers:
    """Which photos are far from all the others in feature space (Datalab's rule).

    With fewer than 3 photos nothing is flagged (there is no typical distance to compare
    with); with fewer than `neighbours` + 1, each photo's neighbours are all the others.

    Example:
        rng = np.random.default_rng(0)
        features = np.concatenate([rng.normal(size=(50, 8)) + 5, [[-5.0] * 8]])
        found = find_outliers(features)
        print(found.ranked, f"{found.ratio[50]:.1f}x")  # [50] and how far
    """
    features = np.asarray(features, dtype=np.float64)
    count = len(features)
    zeros = np.zeros(count)
    if count < 3:
        return Outliers(zeros, np.ones(count), np.ones(count), zeros.astype(bool), np.inf)
    from cleanlab.outlier import transform_distances_to_scores
    from sklearn.neighbors import NearestNeighbors

    k = min(neighbours, count - 1)
    metric = "cosine" if features.shape[1] > 3 else "euclidean"
    # A photo of all-zero features has no direction: cosine distance 1 to everything
    # (scikit-learn would divide by zero).
    search = NearestNeighbors(n_neighbors=k + 1, metric=metric).fit(features)
    distances, indices = search.kneighbors(features)
    # The first neighbour of each photo is itself, unless an identical photo came first:
    # drop one column equal to the photo's own index, else the last one.
    own = indices == np.arange(count)[:, None]
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
    keep = np.ones_like(own)
    keep[np.arange(count), drop] = False
    distances = np.clip(np.nan_to_num(distances[keep].reshape(count, k), nan=1.0), 0, None)
    mean = distances.mean(axis=1)
    q1, q3 = np.percentile(mean, [25, 75])
    threshold = float(q3 + (1 / DATALAB_THRESHOLD - 1) * (q3 - q1))
    median = max(float(np.median(mean)), 100 * np.finfo(np.float64).eps)
    score = transform_distances_to_scores(mean, t=1, scaling_factor=median)
    return Outliers(mean, mean / median, np.asarray(score), mean > threshold, threshold)
