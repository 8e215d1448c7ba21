"""Learning curves, and per class the photos needed for a target accuracy.

"How many photos do I need?" answered from the user's own photos instead of a fixed rule:
heads (the same logistic regression on the network's features as `out_of_sample.py`) are
trained on 10, 20, 40, 70 and 100% of each class's training photos, with several seeds,
and scored on every validation photo. A power law error(n) = a * n^-b, fitted per class
and overall on the mean error at each photo count (a straight line in log-log), then says
how many photos would reach the target, with an 80% interval. Where the fit cannot
support a number, the answer is None with a reason that starts "not enough data to say".

Why two parameters and no floor: with the 10-40% points (3 photo counts) a three-parameter
curve passes through them exactly and its floor is a guess; the benchmark
(benchmarks/RESULTS.md, "Learning curves") measures how far the two-parameter fit on
10-40% lands from the accuracy at 100%.

The interval: the fit's uncertainty (the covariance of log a and b from the residuals
around the line, Student's t with points - 2 degrees of freedom) drawn 4,000 times; each
draw's photo count for the target; the 10th and 90th percentiles. A draw whose error does
not fall (b <= 0) never reaches the target, so an interval whose upper end is such a draw
is unbounded, and so is one whose upper end passes 10x the photos now (the limit the
estimate itself has): "not enough data to say". The seeds' spread enters through the
residuals of the per-count means; the validation photos' own sampling noise, shared by
every seed, is not in it (a class of 40 validation photos moves in steps of 2.5 points).

Targets are accuracies as fractions, as everywhere in clearclass: 0.92 for 92%.

Heads run on the kept features, so the curves are for a head on a network fine-tuned on
every training photo: optimistic at small fractions compared with fine-tuning on fewer
photos (the benchmark measures by how much).

A multi-label run's photos have several labels, so a photo cannot be drawn for one label
alone: the heads (one binary logistic regression per label) are trained on 10-100% of all
the training photos (and at least one photo with each label), and each label's curve is its
F1 on the validation photos against the training photos with it; overall, the micro F1
against the photos in all. Targets are then F1 scores. This variant has not been measured
against fine-tuning as the single-label curves were (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from clearclass.errors import SettingError, check_count

DEFAULT_FRACTIONS = (0.1, 0.2, 0.4, 0.7, 1.0)
DEFAULT_SEEDS = 3
# A head's iterations: lbfgs from the previous (smaller) fraction's weights converges in a
# few dozen; the rare head still short of convergence ranks classes all the same.
HEAD_ITERATIONS = 200
INTERVAL = (0.1, 0.9)  # percentiles of the photos needed: an 80% interval
DRAWS = 4000
FURTHEST = 10.0  # no number beyond this many times the photos a class has now
TARGET_STEP = 0.05  # the default target: the run's accuracy + 5 points ...
TARGET_CAP = 0.99  # ... at most 99%
NOT_ENOUGH = "not enough data to say"


@dataclass
class LearningCurves:
    """Validation accuracy of heads trained on fractions of each class's training photos.

    Arrays are indexed [fraction, seed] or [fraction, seed, class]; a class without
    validation photos has accuracy NaN (unknown, not 0).
    """

    class_ids: list[str]
    fractions: tuple[float, ...]
    photos: np.ndarray  # int, fractions x seeds x classes: training photos each head saw
    accuracy: np.ndarray  # fractions x seeds: share of all validation photos right
    class_accuracy: np.ndarray  # fractions x seeds x classes: recall, NaN without photos
    valid_photos: np.ndarray  # int, per class: validation photos
    seconds: float  # time the heads took (scikit-learn's import not counted)
    # "multi": a set of labels per photo; `accuracy` is then the micro F1, `class_accuracy`
    # each label's F1, `photos` the training photos with each label.
    task: str = "single"
    total: np.ndarray | None = None  # int, fractions x seeds: photos in all (multi-label)

    @property
    def seeds(self) -> int:
        return self.photos.shape[1]

    @property
    def metric(self) -> str:
        """What the curves measure: "accuracy", or (multi-label) "F1"."""
        return "F1" if self.task == "multi" else "accuracy"

    @property
    def photos_total(self) -> np.ndarray:
        """Training photos each head saw in all, fractions x seeds (a multi-label photo
        once, whatever its labels)."""
        return self.photos.sum(axis=2) if self.total is None else self.total

    @property
    def photos_now(self) -> np.ndarray:
        """Training photos per class at the largest fraction (all of them at 1.0)."""
        return self.photos[-1, 0]

    @property
    def accuracy_now(self) -> float:
        """Overall accuracy at the largest fraction, mean over seeds."""
        return float(np.mean(self.accuracy[-1]))

    def default_target(self) -> float:
        """The accuracy now + 5 points, at most 99% (and never below the accuracy now)."""
        return max(self.accuracy_now, min(self.accuracy_now + TARGET_STEP, TARGET_CAP))

    def overall_fit(self) -> PowerLaw | None:
        """The power law of the overall error against the training photos in all."""
        return fit_power_law(self.photos_total.ravel(), 1 - self.accuracy.ravel(),
                             floor=0.5 / max(int(self.valid_photos.sum()), 1))

    def class_fit(self, index: int) -> PowerLaw | None:
        """The power law of class `index`'s error against its training photos."""
        return fit_power_law(self.photos[:, :, index].ravel(),
                             1 - self.class_accuracy[:, :, index].ravel(),
                             floor=0.5 / max(int(self.valid_photos[index]), 1))


@dataclass(frozen=True)
class PowerLaw:
    """error(n) = a * n^-b, fitted as log(error) = log(a) - b log(n) on the mean error at
    each photo count; `covariance` is that of (log a, b), `dof` its degrees of freedom."""

    a: float
    b: float
    covariance: np.ndarray
    dof: int
    photos: np.ndarray  # the distinct photo counts fitted
    errors: np.ndarray  # the mean error at each

    def error(self, photos: float | np.ndarray) -> float | np.ndarray:
        """The fitted error at `photos`."""
        return self.a * np.power(np.asarray(photos, dtype=float), -self.b)

    def photos_for(self, error: float) -> float:
        """The photos at which the fitted error reaches `error` (inf if it never does)."""
        if self.b <= 0:
            return math.inf
        return float(np.exp((np.log(self.a) - np.log(error)) / self.b))

    def draws(self, count: int = DRAWS, seed: int = 0) -> np.ndarray:
        """`count` draws of (log a, b) from the fit's uncertainty (Student's t)."""
        rng = np.random.default_rng(seed)
        normal = rng.multivariate_normal(np.zeros(2), self.covariance, size=count,
                                         method="eigh", check_valid="ignore")
        scale = np.sqrt(rng.chisquare(self.dof, size=(count, 1)) / self.dof)
        return np.array([np.log(self.a), self.b]) + normal / scale

    def error_interval(self, photos: float) -> tuple[float, float]:
        """The 80% interval of the fitted error at `photos` (from `draws`)."""
        log_a, b = self.draws().T
        with np.errstate(over="ignore"):
            errors = np.exp(log_a - b * np.log(photos))
        low, high = np.quantile(errors, INTERVAL)
        return float(low), float(high)

    def as_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "dof": self.dof,
                "photos": self.photos.tolist(), "errors": self.errors.tolist()}


@dataclass(frozen=True)
class PhotosNeeded:
    """What one class (or all of them, `class_id` None) needs for the target accuracy.

    `photos_needed` counts training photos in all (for the class, or for every class
    together), `more` those to add; `low`..`high` is the 80% interval of `photos_needed`.
    When the fit cannot support a number, these are None and `reason` says why.
    """

    class_id: str | None
    photos_now: int
    accuracy_now: float | None  # None: no validation photos
    target: float
    photos_needed: int | None
    more: int | None
    low: int | None
    high: int | None
    reason: str = ""

    @property
    def known(self) -> bool:
        return self.photos_needed is not None


@dataclass
class PhotosAdvice:
    """The learning curves with the photos needed for one target: overall and per class.
    What the report and `clearclass advise` show; in a notebook, the figure."""

    curves: LearningCurves
    target: float
    overall: PhotosNeeded
    per_class: list[PhotosNeeded]
    names: list[str] | None = None  # the classes' display names, for the figure

    def figure(self):
        """The curves, overall and the 8 classes furthest below the target (`figures`)."""
        from clearclass import figures

        return figures.learning_curves(self.curves, self.per_class, self.target, self.names)

    def most_needed(self) -> list[PhotosNeeded]:
        """The classes in order of the photos they need: most first, then those the fit
        cannot say (by accuracy, lowest first), then those at the target."""
        def order(row: PhotosNeeded) -> tuple:
            if row.more:
                return (0, -row.more, row.class_id)
            if row.more is None:
                return (1, row.accuracy_now if row.accuracy_now is not None else 2.0,
                        row.class_id)
            return (2, 0, row.class_id)
        return sorted(self.per_class, key=order)

    def _repr_png_(self) -> bytes:
        from clearclass import figures

        return figures.png_bytes(self.figure())


def photos_advice(curves: LearningCurves, target: float | None = None,
                  network_accuracy: Sequence[float | None] | None = None,
                  names: Sequence[str] | None = None) -> PhotosAdvice:
    """`photos_needed` and `overall_photos_needed` for one target (default: the accuracy
    now + 5 points, at most 99%). `network_accuracy`: the trained network's own accuracy on
    each class's validation photos, to count from (see `photos_needed`); `names`, the
    classes' display names for the figure.

    Example:
        from clearclass.advice.features import run_features
        advice = photos_advice(learning_curves(run_features("runs/dogs"), seeds=2), 0.9)
        for row in advice.most_needed()[:3]:
            print(row.class_id, row.more, row.low, row.high, row.reason)
    """
    overall = None
    if network_accuracy is not None:
        known = [(a, n) for a, n in zip(network_accuracy, curves.valid_photos) if a is not None]
        overall = (sum(a * n for a, n in known) / max(sum(n for _, n in known), 1)
                   if known else None)
    if target is None:
        target = curves.default_target() if overall is None else default_target(overall)
    target = check_target(target)
    return PhotosAdvice(curves, target, overall_photos_needed(curves, target, overall),
                        photos_needed(curves, target, network_accuracy),
                        None if names is None else list(names))


def learning_curves(found, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                    seeds: int = DEFAULT_SEEDS) -> LearningCurves:
    """Heads trained on `fractions` of each class's training photos (at least one photo
    of each class), `seeds` draws each, scored on every validation photo of `found`
    (a `RunFeatures`). Subsets are nested within a seed (10% inside 20% ...), and all
    seeds share the head at 1.0, trained once.

    Example:
        from clearclass.advice.features import run_features
        curves = learning_curves(run_features("runs/dogs"))
        print(curves.accuracy.mean(axis=1))  # overall accuracy at each fraction
    """
    fractions = _check_fractions(fractions)
    seeds = check_count("seeds", seeds)
    features, targets = np.asarray(found.features), np.asarray(found.targets)
    is_valid = np.asarray(found.is_valid, dtype=bool)
    if targets.ndim == 2:  # multi-label: photos x labels
        return _multi_label_curves(list(found.class_ids), features, targets, is_valid,
                                   fractions, seeds)
    classes = len(found.class_ids)
    train, valid = np.nonzero(~is_valid)[0], np.nonzero(is_valid)[0]
    per_class = [train[targets[train] == c] for c in range(classes)]
    if sum(len(p) > 0 for p in per_class) < 2:
        raise SettingError("found", "needs training photos of at least 2 classes for "
                                    "learning curves; give a run trained on 2 or more "
                                    "classes.")
    if len(valid) == 0:
        raise SettingError("found", "has no validation photos to score learning curves on; "
                                    "give a run with a validation split.")
    valid_photos = np.bincount(targets[valid], minlength=classes)
    shape = (len(fractions), seeds)
    photos = np.zeros((*shape, classes), dtype=np.int64)
    accuracy = np.zeros(shape)
    class_accuracy = np.full((*shape, classes), np.nan)
    with _one_blas_thread():
        started = time.perf_counter()  # scikit-learn imported: its import is not counted
        _fill(features, targets, valid, per_class, fractions, photos, accuracy,
              class_accuracy, valid_photos)
    return LearningCurves(list(found.class_ids), fractions, photos, accuracy,
                          class_accuracy, valid_photos, time.perf_counter() - started)


def _fill(features, targets, valid, per_class, fractions, photos, accuracy, class_accuracy,
          valid_photos) -> None:
    """Train and score every (fraction, seed) head into the arrays."""
    classes, valid_targets = len(per_class), targets[valid]
    for seed in range(photos.shape[1]):
        rng = np.random.default_rng(seed)
        orders = [rng.permutation(p) for p in per_class]
        head = None
        for f, fraction in enumerate(fractions):
            if fraction == 1.0 and seed > 0:  # every seed's 1.0 is the same head
                photos[f, seed], accuracy[f, seed] = photos[f, 0], accuracy[f, 0]
                class_accuracy[f, seed] = class_accuracy[f, 0]
                continue
            counts = [min(len(o), max(1, round(fraction * len(o)))) for o in orders]
            chosen = np.concatenate([o[:n] for o, n in zip(orders, counts, strict=True)])
            head = _fit_head(features[chosen], targets[chosen], head)
            right = head.predict(features[valid]) == valid_targets
            photos[f, seed] = counts
            accuracy[f, seed] = right.mean()
            hits = np.bincount(valid_targets, weights=right, minlength=classes)
            with np.errstate(invalid="ignore", divide="ignore"):
                class_accuracy[f, seed] = np.where(valid_photos > 0, hits / valid_photos,
                                                   np.nan)


def _multi_label_curves(class_ids: list[str], features: np.ndarray, targets: np.ndarray,
                        is_valid: np.ndarray, fractions: tuple[float, ...],
                        seeds: int) -> LearningCurves:
    """`learning_curves` of a multi-label run (the module's docstring says how)."""
    from clearclass.task import f1_scores

    train, valid = np.nonzero(~is_valid)[0], np.nonzero(is_valid)[0]
    with_ = targets[train].sum(axis=0)
    if not ((with_ > 0) & (with_ < len(train))).any():
        raise SettingError("found", "needs a label that some training photos have and others "
                                    "not for learning curves; give a run whose photos differ "
                                    "in their labels.")
    if len(valid) == 0:
        raise SettingError("found", "has no validation photos to score learning curves on; "
                                    "give a run with a validation split.")
    labels = targets.shape[1]
    valid_photos = targets[valid].sum(axis=0)
    shape = (len(fractions), seeds)
    photos, total = np.zeros((*shape, labels), dtype=np.int64), np.zeros(shape, np.int64)
    accuracy, class_accuracy = np.zeros(shape), np.full((*shape, labels), np.nan)
    with _one_blas_thread():
        started = time.perf_counter()
        for seed in range(seeds):
            order = np.random.default_rng(seed).permutation(train)
            # Each label's first photo in this order: kept in every subset, so that no head
            # goes without a label the run has (subsets stay nested: the prefixes are).
            firsts = {int(order[np.argmax(targets[order, j] > 0)]) for j in range(labels)
                      if with_[j]}
            for f, fraction in enumerate(fractions):
                if fraction == 1.0 and seed > 0:  # every seed's 1.0 is the same head
                    photos[f, seed], total[f, seed] = photos[f, 0], total[f, 0]
                    accuracy[f, seed], class_accuracy[f, seed] = (accuracy[f, 0],
                                                                  class_accuracy[f, 0])
                    continue
                prefix = order[:max(1, round(fraction * len(order)))]
                chosen = np.union1d(prefix, sorted(firsts))
                head = _fit_head(features[chosen], targets[chosen], None, multi_label=True)
                decided = head.predict_proba(features[valid]) >= 0.5
                per_label, micro = f1_scores(decided, targets[valid])
                photos[f, seed], total[f, seed] = targets[chosen].sum(axis=0), len(chosen)
                accuracy[f, seed] = micro
                class_accuracy[f, seed] = np.where(valid_photos > 0, per_label, np.nan)
    return LearningCurves(class_ids, fractions, photos, accuracy, class_accuracy,
                          valid_photos, time.perf_counter() - started, "multi", total)


def fit_power_law(photos: np.ndarray, errors: np.ndarray,
                  floor: float = 1e-3) -> PowerLaw | None:
    """error(n) = a * n^-b by least squares in log-log on the mean error at each distinct
    photo count (NaN errors ignored, errors below `floor` raised to it: a measured 0 is
    "under half a validation photo", not minus infinity in log space). None with fewer
    than 3 distinct counts: 2 points always fit a line, and leave no residual to judge it.

    Example:
        fit = fit_power_law(np.array([10, 20, 40, 80]), np.array([0.4, 0.3, 0.225, 0.169]))
        print(round(fit.b, 2), round(fit.photos_for(0.1)))  # 0.41 283
    """
    photos, errors = np.asarray(photos, dtype=float), np.asarray(errors, dtype=float)
    keep = np.isfinite(errors) & (photos > 0)
    photos, errors = photos[keep], np.maximum(errors[keep], floor)
    counts = np.unique(photos)
    if len(counts) < 3:
        return None
    means = np.array([errors[photos == n].mean() for n in counts])
    x, y = np.log(counts), np.log(means)
    design = np.column_stack([np.ones_like(x), -x])
    (log_a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    dof = len(counts) - 2
    residual = y - design @ np.array([log_a, b])
    variance = float(residual @ residual) / dof
    covariance = variance * np.linalg.inv(design.T @ design)
    return PowerLaw(float(np.exp(log_a)), float(b), covariance, dof, counts, means)


def check_target(target: object) -> float:
    """`target` as an accuracy in (0, 1], or a SettingError saying what to give.

    Example:
        check_target(0.92)  # 0.92; check_target(92) says to give 0.92
    """
    if isinstance(target, bool) or not isinstance(target, (int, float)) \
            or not math.isfinite(target):
        raise SettingError("target", f"must be an accuracy between 0 and 1, such as 0.92 for "
                                     f"92%; got {target!r}.")
    if target > 1:
        hint = f" (for {target:g}% give {target / 100:g})" if target <= 100 else ""
        raise SettingError("target", f"must be an accuracy of at most 1 (100%), such as 0.92 "
                                     f"for 92%{hint}; got {target:g}.")
    if target <= 0:
        raise SettingError("target", f"must be an accuracy above 0, such as 0.92 for 92%; "
                                     f"got {target:g}.")
    return float(target)


def photos_needed(curves: LearningCurves, target: float | None = None,
                  network_accuracy: Sequence[float | None] | None = None
                  ) -> list[PhotosNeeded]:
    """Per class, the training photos that the fitted curve says reach `target` accuracy
    (a fraction; default `curves.default_target()`), or None with a reason.

    With `network_accuracy` (the trained network's own accuracy on each class's validation
    photos, None where it has none), each class counts from the network's accuracy now and
    follows its curve's slope: error(n) = error_now * (n / photos_now)^-b. The heads on the
    features are often more (or less) accurate than the network itself after a short
    fine-tune; their curve says how fast the error falls with photos, the network where it
    stands, so a class the network gets wrong is never "reached" because a head gets it
    right.

    Example:
        from clearclass.advice.features import run_features
        curves = learning_curves(run_features("runs/dogs"), seeds=2)
        for row in photos_needed(curves, target=0.9):
            print(row.class_id, row.more if row.known else row.reason)
    """
    target = curves.default_target() if target is None else check_target(target)
    rows = []
    for c, class_id in enumerate(curves.class_ids):
        network = None if network_accuracy is None else network_accuracy[c]
        if curves.valid_photos[c] == 0 or (network_accuracy is not None and network is None):
            rows.append(_unknown(class_id, int(curves.photos_now[c]), None, target,
                                 "no validation photos: its accuracy is unknown"))
            continue
        rows.append(_needed(class_id, curves.photos[:, :, c],
                            float(np.mean(curves.class_accuracy[-1, :, c])), target,
                            lambda c=c: curves.class_fit(c), network))
    return rows


def overall_photos_needed(curves: LearningCurves, target: float | None = None,
                          network_accuracy: float | None = None) -> PhotosNeeded:
    """The training photos in all (each class grown in proportion) that the overall curve
    says reach `target` accuracy (default `curves.default_target()`); counted from the
    network's `network_accuracy` when given, as `photos_needed` does.

    Example:
        from clearclass.advice.features import run_features
        row = overall_photos_needed(learning_curves(run_features("runs/dogs"), seeds=2))
        print(row.target, row.photos_needed, row.low, row.high, row.reason)
    """
    target = curves.default_target() if target is None else check_target(target)
    return _needed(None, curves.photos_total, curves.accuracy_now, target,
                   curves.overall_fit, network_accuracy)


def _needed(class_id: str | None, photos: np.ndarray, accuracy_now: float, target: float,
            fit_of, network: float | None = None) -> PhotosNeeded:
    now = int(photos[-1, 0])
    if network is not None:
        accuracy_now = float(network)
    if accuracy_now >= target:
        return PhotosNeeded(class_id, now, accuracy_now, target, now, 0, now, now)
    if now == 0:
        return _unknown(class_id, now, accuracy_now, target, "no training photos")
    if len(np.unique(photos)) < 3:
        return _unknown(class_id, now, accuracy_now, target,
                        f"{len(np.unique(photos))} distinct photo counts; a curve needs 3")
    if target >= 1:
        return _unknown(class_id, now, accuracy_now, target,
                        "a power law never reaches 100%")
    fit = fit_of()
    if fit is None or fit.b <= 0:
        return _unknown(class_id, now, accuracy_now, target,
                        "its error does not fall with more photos")
    log_a, b = fit.draws().T
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        if network is None:
            needed = fit.photos_for(1 - target)
            each = np.where(b > 0, np.exp((log_a - np.log(1 - target)) / b), np.inf)
        else:  # from the network's error now, along the curve's slope
            # numpy floats: a slope near 0 gives inf (said below), not an OverflowError.
            ratio = np.float64(1 - accuracy_now) / (1 - target)
            needed = float(now * ratio ** (1 / np.float64(fit.b)))
            each = np.where(b > 0, now * ratio ** (1 / b), np.inf)
        low, high = np.quantile(each, INTERVAL)  # inf - inf between two draws: NaN
    if needed > FURTHEST * now:
        return _unknown(class_id, now, accuracy_now, target,
                        f"the curve would have to be followed to more than {FURTHEST:g}x "
                        f"the {now} photos now")
    if not np.isfinite(high) or high > FURTHEST * now:
        return _unknown(class_id, now, accuracy_now, target,
                        "the fit is too uncertain to bound the photos needed (its 80% "
                        f"interval reaches past {FURTHEST:g}x the photos now)")
    # Below the target now, so at least one more photo, whatever the curve says.
    needed = max(math.ceil(needed), now + 1)
    low, high = max(math.ceil(low), now + 1), max(math.ceil(high), needed)
    return PhotosNeeded(class_id, now, accuracy_now, target, needed, needed - now,
                        min(low, needed), high)


def _unknown(class_id, now, accuracy_now, target, why) -> PhotosNeeded:
    return PhotosNeeded(class_id, now, accuracy_now, target, None, None, None, None,
                        f"{NOT_ENOUGH}: {why}")


def _check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    try:
        values = tuple(sorted({float(f) for f in fractions}))
    except (TypeError, ValueError):
        values = ()
    if not values or values[0] <= 0 or values[-1] > 1:
        raise SettingError("fractions", f"must be shares of the training photos in (0, 1], "
                                        f"such as (0.1, 0.2, 0.4, 0.7, 1.0); got "
                                        f"{fractions!r}.")
    return values


def _one_blas_thread():
    """BLAS on one thread while the heads train: their products (a few thousand photos x
    1,280 features x the classes) are too small to share, and OpenBLAS's second thread
    made each fit 4-30x slower on the benchmark's busy 2-core machine (0.6 s instead of
    6-18 s for 1,600 photos of imagewoof-2k). scikit-learn is imported first: it loads
    SciPy's own OpenBLAS, which a limit set before it is loaded would miss."""
    import sklearn.linear_model  # noqa: F401
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _fit_head(features: np.ndarray, targets: np.ndarray, previous, multi_label: bool = False):
    """The advice head on these photos, from `previous`'s weights when it saw the same
    classes (lbfgs then converges in a fraction of the iterations); `multi_label`: a binary
    head per label, each from scratch."""
    from sklearn.exceptions import ConvergenceWarning

    from clearclass.advice.out_of_sample import feature_head

    head = feature_head(max_iter=HEAD_ITERATIONS, multi_label=multi_label)
    regression = head[-1]
    if previous is not None and np.array_equal(previous[-1].classes_, np.unique(targets)):
        regression.set_params(warm_start=True)
        regression.coef_ = previous[-1].coef_.copy()
        regression.intercept_ = previous[-1].intercept_.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # Many classes of a photo or two each: scikit-learn wonders whether the labels are
        # a regression's values; they are classes.
        warnings.filterwarnings("ignore", "The number of unique classes", UserWarning)
        # A label on every photo of a subset, or none: that head gives the constant.
        warnings.filterwarnings("ignore", "Label .*present in all training examples",
                                UserWarning)
        head.fit(features, targets)
    return head


def default_target(accuracy: float) -> float:
    """The target when none is given: `accuracy` + 5 points, at most 99% (and never below
    `accuracy`), as the issue asks ("the run's overall accuracy + 5 points").

    Example:
        print(default_target(0.9))  # 0.95
    """
    if not math.isfinite(accuracy):
        return TARGET_CAP
    return max(accuracy, min(accuracy + TARGET_STEP, TARGET_CAP))
