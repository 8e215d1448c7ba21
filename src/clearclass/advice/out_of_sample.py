"""Class probabilities for every photo from a head that never saw it (K-fold).

Confident learning (Northcutt et al., 2021; the `cleanlab` package) finds label errors from
out-of-sample probabilities: a photo learned with a wrong label has been pulled toward it,
so the model that trained on it is the wrong judge. Here each fold's photos are judged by a
logistic regression trained on the other folds' features (scikit-learn; each photo's
features scaled to length 1), which takes seconds where a fine-tune per fold would take as
long as training.

A multi-label run's photos (targets: multi-hot rows) are judged by one binary logistic
regression per label (scikit-learn's one-vs-rest), each label's probability on its own, as
the network's sigmoids are.
"""

from __future__ import annotations

import warnings

import numpy as np

DEFAULT_FOLDS = 5


def require_libraries(command: str) -> None:
    """One line naming the extra to install when scikit-learn or cleanlab is missing (the
    `advice` extra), before any work is done.

    Example:
        require_libraries("clean")  # nothing happens when both are installed
    """
    import importlib.util

    from clearclass.errors import ClearclassError

    for module, package in (("sklearn", "scikit-learn"), ("cleanlab", "cleanlab")):
        if importlib.util.find_spec(module) is None:
            raise ClearclassError(f"{command} judges the photos with scikit-learn and "
                                  f"cleanlab, and {package} is not installed; install them "
                                  "with pip install 'clearclass[advice]'.")


def feature_head(max_iter: int = 1000, multi_label: bool = False):
    """The head every piece of advice trains on the network's features: each photo's
    features scaled to length 1, then a multinomial logistic regression (scikit-learn,
    lbfgs, its default L2 penalty), unfitted; `multi_label`: a binary one per label
    (`OneVsRestClassifier`, fitted on multi-hot rows; a label that every photo it sees has,
    or none does, gets that constant).

    Length 1 is the cosine geometry the neighbours (outliers, near duplicates) use too. On
    imagewoof-2k with 5% of the training labels swapped (benchmarks/label_errors.py, seed
    42) it put 86% of the swapped photos among the 80 least self-confident, against 79% with
    each feature standardised instead (StandardScaler), which leaves 1,280 columns of equal
    weight for 1,600 photos to over-fit.

    Example:
        head = feature_head().fit(np.random.rand(20, 4), np.arange(20) % 2)
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    regression = LogisticRegression(max_iter=max_iter)
    return make_pipeline(Normalizer(),
                         OneVsRestClassifier(regression) if multi_label else regression)


def usable_folds(targets: np.ndarray, folds: int = DEFAULT_FOLDS) -> int:
    """How many folds `out_of_sample_probabilities` makes: `folds`, or as many as the
    smallest class has photos when it has fewer (at least 2), so that every fold holds a
    photo of every class it can. A caller says so when this is fewer than it asked for.
    Multi-label targets (multi-hot rows): as many as the photos with the rarest label, or
    without the most common one, among the labels on 2 photos or more and missing from 2
    or more (a label on one photo is never seen by the head that judges that photo, so it
    cannot be judged with any number of folds; `clean` says so).

    Example:
        print(usable_folds(np.array([0] * 10 + [1] * 3)))  # 3
    """
    targets = np.asarray(targets)
    if targets.ndim == 2:
        with_ = targets.sum(axis=0)
        counts = np.minimum(with_, len(targets) - with_)
        if (counts >= 2).any():
            counts = counts[counts >= 2]
    else:
        counts = np.bincount(targets)
    present = counts[counts > 0]
    return max(2, min(folds, int(present.min()))) if len(present) else folds


def out_of_sample_probabilities(features: np.ndarray, targets: np.ndarray, classes: int,
                                folds: int = DEFAULT_FOLDS, seed: int = 0) -> np.ndarray:
    """Probabilities (photos x classes): row i from a head trained without photo i.

    The folds are stratified; with a class of fewer photos than `folds`, as many folds as
    its photos (at least 2: `usable_folds`). A class absent from a fold's training photos
    gets probability 0 there.

    Multi-label `targets` (photos x labels, 0/1) give each label's probability from a binary
    head per label; the folds are stratified by each photo's rarest label (the photos with
    none as one more group), so that a rare label's photos spread over the folds. A label
    that every training photo of a fold has, or none, gets that probability (1 or 0) there.

    Example:
        from clearclass.advice.features import run_features
        found = run_features("runs/dogs")
        probabilities = out_of_sample_probabilities(found.features, found.targets,
                                                    len(found.class_ids))
        self_confidence = probabilities[np.arange(len(found)), found.targets]
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold

    targets = np.asarray(targets)
    if targets.ndim == 2:
        return _multi_label_probabilities(features, targets, folds, seed)
    counts = np.bincount(targets, minlength=classes)
    if len(targets) < 2 or (counts > 0).sum() < 2:
        raise ValueError("out-of-sample probabilities need photos of at least 2 classes")
    splits = usable_folds(targets, folds)
    probabilities = np.zeros((len(targets), classes), dtype=np.float64)
    splitter = StratifiedKFold(n_splits=splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # A class of one photo is held out once and unseen by that fold's head (documented
        # above); a head that stops short of convergence still ranks the classes.
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        folds_of = list(splitter.split(features, targets))
    for train, held_out in folds_of:
        if len(np.unique(targets[train])) < 2:  # nothing to tell apart in this fold
            probabilities[held_out, targets[train][0]] = 1.0
            continue
        head = feature_head()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            head.fit(features[train], targets[train])
        probabilities[np.ix_(held_out, head.classes_)] = head.predict_proba(features[held_out])
    return probabilities


def _multi_label_probabilities(features: np.ndarray, targets: np.ndarray, folds: int,
                               seed: int) -> np.ndarray:
    """`out_of_sample_probabilities` for multi-hot `targets`: each label's probability."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold

    with_ = targets.sum(axis=0)
    if len(targets) < 2 or not ((with_ > 0) & (with_ < len(targets))).any():
        raise ValueError("out-of-sample probabilities need a label that some photos have and "
                         "others not")
    # Each photo's rarest label, or -1 for a photo without one: the group it is drawn from.
    rarity = np.where(targets > 0, with_[None, :], np.iinfo(np.int64).max)
    groups = np.where(targets.any(axis=1), rarity.argmin(axis=1), -1)
    splitter = StratifiedKFold(n_splits=usable_folds(targets, folds), shuffle=True,
                               random_state=seed)
    probabilities = np.zeros(targets.shape, dtype=np.float64)
    with warnings.catch_warnings():
        # A group of fewer photos than folds misses some folds; a label then absent from (or
        # on every photo of) a fold's training photos is that constant there (documented).
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        warnings.filterwarnings("ignore", "Label .* is present in all training examples",
                                UserWarning)
        warnings.filterwarnings("ignore", "Label not .* is present in all training examples",
                                UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        for train, held_out in splitter.split(features, groups):
            head = feature_head(multi_label=True).fit(features[train], targets[train])
            probabilities[held_out] = head.predict_proba(features[held_out])
    return probabilities
