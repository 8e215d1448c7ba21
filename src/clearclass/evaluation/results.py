"""What a model's predictions on labelled photos say: accuracy, confusions, calibration.

`Evaluation` holds one probability row per photo and derives everything else from it, so a
notebook can ask for any of it without predicting again. At 120 classes the confusion matrix
is only readable when the classes confused with each other sit together: `view_order()`
orders them by hierarchical clustering of the confusion rates, and the report, the figures
and per_class.csv all follow that order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from clearclass import fileio
from clearclass.bundle import ModelInfo
from clearclass.data.decode import UnreadableImage, load_item
from clearclass.errors import DataError
from clearclass.run_folder import read_json_object

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TOP_LOSSES = 16  # photos in the report's top-losses grid
MOST_CONFUSED_PAIRS = 10  # pairs in the report's most-confused heatmap
CALIBRATION_BINS = 15  # as in Guo et al. 2017, "On Calibration of Modern Neural Networks"
# optimal_leaf_ordering costs O(n^3); past this many classes the plain dendrogram order is
# kept (already good, and seconds instead of minutes).
OPTIMAL_ORDER_UP_TO = 400
# In a report folder: the headline numbers as data (`Evaluation.headline`, `read_results`),
# so that `clearclass runs` can list them without reading the page.
RESULTS_FILE = "results.json"


@dataclass
class ConfusedPair:
    """A mistake the model makes: `count` photos of `actual` predicted as `predicted`, which
    is `rate` of the actual class's photos."""

    actual: str
    predicted: str
    count: int
    rate: float = math.nan


@dataclass
class CalibrationBin:
    """Photos whose top probability fell in [low, high): how sure the model was on average
    (`confidence`) and how often it was right (`accuracy`)."""

    low: float
    high: float
    count: int
    confidence: float
    accuracy: float


@dataclass
class Calibration:
    """Whether the model's probabilities can be taken at their word.

    `expected_error` (ECE) is the gap between confidence and accuracy, averaged over the bins
    weighted by their photos: 0.02 means a prediction made "with 90%" is right about 88-92%
    of the time.
    """

    bins: list[CalibrationBin]
    expected_error: float


def confusion_order(matrix: np.ndarray) -> np.ndarray:
    """The classes ordered so that those confused with each other sit side by side.

    Two classes are close when either is often mistaken for the other: the similarity is the
    mean of the two mistake rates (each a share of its actual class, so small classes count as
    much as large ones). Average-linkage clustering of 1 - similarity, with its leaves put in
    the order that keeps neighbours most alike (scipy's optimal_leaf_ordering), gives the
    order. Classes never confused keep their alphabetical place among themselves.

    Example:
        matrix = np.array([[9, 0, 1], [0, 9, 0], [1, 0, 9]])  # classes 0 and 2 confused
        order = confusion_order(matrix).tolist()
        print(order, abs(order.index(0) - order.index(2)))  # e.g. [1, 0, 2] 1
    """
    from scipy.cluster.hierarchy import leaves_list, linkage, optimal_leaf_ordering
    from scipy.spatial.distance import squareform

    n = len(matrix)
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    np.fill_diagonal(rates, 0)
    similarity = (rates + rates.T) / 2
    if n < 3 or similarity.max() <= 0:
        return np.arange(n)
    distance = 1.0 - similarity / similarity.max()
    np.fill_diagonal(distance, 0)
    condensed = squareform(distance, checks=False)
    tree = linkage(condensed, method="average")
    if n <= OPTIMAL_ORDER_UP_TO:
        tree = optimal_leaf_ordering(tree, condensed)
    return leaves_list(tree)


@dataclass(repr=False)
class Evaluation:
    """Predictions of a model on labelled photos, and what follows from them.

    `probabilities` has one row per photo; `tta_probabilities`, when test-time augmentation
    was asked for, the same averaged over the photo and its mirror image.

    Example:
        report = clearclass.evaluate("runs/dogs")
        print(f"{report.accuracy:.1%}", report.most_confused()[:3])
        report.plot_most_confused(pairs=5)  # a matplotlib figure; shown under a notebook cell
    """

    class_ids: list[str]
    class_names: list[str]
    paths: list[Path]
    targets: np.ndarray  # true class index per photo
    probabilities: np.ndarray  # photos x classes
    model: ModelInfo | None = None  # the model's preprocessing, to show its photos
    report_dir: Path | None = None
    tta_probabilities: np.ndarray | None = None
    source: str = "validation photos"  # what the photos are, in words
    _order: list[int] | None = field(default=None, init=False, compare=False)
    # The figures of its report (RUN/report/) that `train --track` sends on.
    FIGURES: ClassVar[tuple[str, ...]] = ("confusion.png", "most_confused.png",
                                          "calibration.png", "top_losses.png")

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(1)

    @property
    def accuracy(self) -> float:
        return float((self.predictions == self.targets).mean()) if len(self.targets) else math.nan

    @property
    def tta_accuracy(self) -> float | None:
        """Accuracy with test-time augmentation, None when it was not measured."""
        if self.tta_probabilities is None or not len(self.targets):
            return None
        return float((self.tta_probabilities.argmax(1) == self.targets).mean())

    def top_k_accuracy(self, k: int = 5) -> float:
        """Share of photos whose class is among the k most likely."""
        k = min(k, self.probabilities.shape[1])
        top = np.argsort(-self.probabilities, axis=1)[:, :k]
        return float((top == self.targets[:, None]).any(1).mean())

    @property
    def losses(self) -> np.ndarray:
        p = self.probabilities[np.arange(len(self.targets)), self.targets]
        return -np.log(np.clip(p, 1e-12, 1.0))

    def confusion(self) -> np.ndarray:
        """Counts: row = actual class, column = predicted class (the model's class order)."""
        n = len(self.class_ids)
        matrix = np.zeros((n, n), dtype=np.int64)
        np.add.at(matrix, (self.targets, self.predictions), 1)
        return matrix

    def view_order(self) -> list[int]:
        """Class indices in the order the report shows them: confused classes side by side."""
        if self._order is None:
            self._order = [int(i) for i in confusion_order(self.confusion())]
        return self._order

    def most_confused(self, min_count: int = 1) -> list[ConfusedPair]:
        """Pairs (actual, predicted) with counts and rates, most frequent mistake first."""
        matrix = self.confusion()
        support = matrix.sum(1)
        np.fill_diagonal(matrix, 0)
        pairs = [(matrix[a, p], a, p) for a, p in zip(*np.nonzero(matrix >= min_count))]
        pairs.sort(key=lambda t: (-t[0], -t[0] / support[t[1]], self.class_names[t[1]],
                                  self.class_names[t[2]]))
        return [ConfusedPair(self.class_names[a], self.class_names[p], int(c),
                             float(c / support[a])) for c, a, p in pairs]

    def per_class(self) -> list[dict]:
        """Precision, recall, F1 and support of each class, in the view order."""
        matrix = self.confusion()
        mistakes = matrix.copy()
        np.fill_diagonal(mistakes, 0)
        rows = []
        for position, i in enumerate(self.view_order()):
            tp = matrix[i, i]
            predicted, support = matrix[:, i].sum(), matrix[i, :].sum()
            precision = tp / predicted if predicted else 0.0
            recall = tp / support if support else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            worst = int(mistakes[i].argmax())
            rows.append({"position": position, "class_id": self.class_ids[i],
                         "name": self.class_names[i], "precision": float(precision),
                         "recall": float(recall), "f1": float(f1), "support": int(support),
                         "most_confused_with": self.class_names[worst] if mistakes[i, worst]
                         else "", "confused_count": int(mistakes[i, worst])})
        return rows

    def top_losses(self, k: int = TOP_LOSSES) -> list[int]:
        """Indices of the k photos with the highest loss, highest first."""
        return [int(i) for i in np.argsort(-self.losses, kind="stable")[:k]]

    def calibration(self, bins: int = CALIBRATION_BINS) -> Calibration:
        """Confidence against accuracy in `bins` equal-width bins, and the expected error."""
        return calibration_of(self.probabilities.max(1), self.predictions == self.targets, bins)

    def cell_photos(self, actual: int, predicted: int) -> list[int]:
        """Indices of the photos of class `actual` predicted as `predicted`, worst first."""
        inside = np.nonzero((self.targets == actual) & (self.predictions == predicted))[0]
        return [int(i) for i in inside[np.argsort(-self.losses[inside], kind="stable")]]

    def photo(self, i: int) -> np.ndarray:
        """Photo number `i` as the model saw it (a square uint8 array; without the model's
        preprocessing, a 224 px centre crop)."""
        return photo_as_seen(self.paths[i], self.model)

    def plot_confusion_matrix(self) -> Figure:
        """The whole confusion matrix in the view order (rows: actual; columns: predicted)."""
        from clearclass import figures

        order = self.view_order()
        matrix = self.confusion()[np.ix_(order, order)]
        return figures.confusion_matrix(matrix, [self.class_names[i] for i in order])

    def plot_most_confused(self, pairs: int = 5) -> Figure:
        """The confusion sub-matrix of only the classes in the `pairs` most frequent mistakes.

        Readable at 120 classes, where the whole matrix is not.
        """
        from clearclass import figures

        return figures.most_confused_heatmap(
            self.confusion(), self.class_names,
            [(p.actual, p.predicted) for p in self.most_confused()[:pairs]])

    def plot_calibration(self) -> Figure:
        """Reliability diagram: accuracy against confidence, with how many photos each bin has."""
        from clearclass import figures

        return figures.reliability_diagram(self.calibration())

    def plot_top_losses(self, k: int = 9) -> Figure:
        """The k photos the model got most wrong: predicted / actual / loss / probability."""
        from clearclass import figures

        worst = self.top_losses(k)
        if not worst:
            return figures.message("No photos.")
        return figures.top_losses(
            [self.photo(i) for i in worst],
            [(self.class_names[self.predictions[i]], self.class_names[self.targets[i]],
              float(self.losses[i]), float(self.probabilities[i, self.predictions[i]]))
             for i in worst])

    def facts(self) -> list[tuple[str, str]]:
        """The headline figures, as (name, value) pairs of text."""
        facts = []
        if self.model is not None:
            facts.append(("Model", f"{self.model.architecture}, {len(self.class_ids)} classes, "
                                   f"{self.model.item_resize} px ({self.model.resize_method})"))
        facts += [("Photos", f"{len(self.targets)} {self.source}"),
                  ("Accuracy", f"{self.accuracy:.2%}")]
        if self.tta_accuracy is not None:
            facts.append(("Accuracy with test-time augmentation",
                          f"{self.tta_accuracy:.2%} (the photo and its mirror image, averaged)"))
        if len(self.class_ids) > 5:
            facts.append(("Top-5 accuracy", f"{self.top_k_accuracy(5):.2%}"))
        if len(self.targets):
            facts.append(("Expected calibration error",
                          f"{self.calibration().expected_error:.3f} (0 = probabilities match "
                          "how often the model is right)"))
        return facts

    def headline(self) -> dict:
        """The headline numbers, as the report's results.json keeps them: what the photos
        were, how many, the accuracy, and the accuracy with test-time augmentation (None
        without `tta`)."""
        return {"source": self.source, "photos": len(self.targets),
                "accuracy": None if math.isnan(self.accuracy) else self.accuracy,
                "tta_accuracy": self.tta_accuracy,
                "run_id": (self.model.training or {}).get("run_id") if self.model else None}

    def tracked_scores(self) -> dict[str, float]:
        """What `train --track` records of this evaluation: the accuracy, and with `tta` the
        accuracy with test-time augmentation."""
        scores = {"accuracy": self.accuracy}
        if self.tta_accuracy is not None:
            scores["tta_accuracy"] = self.tta_accuracy
        return scores

    def summary(self, pairs: int = MOST_CONFUSED_PAIRS) -> str:
        """Accuracy and the most confused pairs, as lines of text."""
        line = (f"Accuracy {self.accuracy:.2%} on {len(self.targets)} {self.source}"
                + (f"; top-5 {self.top_k_accuracy(5):.2%}" if len(self.class_ids) > 5 else ""))
        if self.tta_accuracy is not None:
            line += f"; with test-time augmentation {self.tta_accuracy:.2%}"
        lines = [line + "."]
        mistakes = self.most_confused()[:pairs]
        if mistakes:
            lines.append("Most confused (actual -> predicted: count, share of the actual class):")
            lines += [f"  {p.actual} -> {p.predicted}: {p.count} ({p.rate:.0%})"
                      for p in mistakes]
        else:
            lines.append(f"No mistakes on the {self.source}.")
        if self.report_dir:
            lines.append(f"Report: {self.report_dir / 'index.html'}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary(pairs=5)

    def _repr_html_(self) -> str:
        from clearclass import figures, pages

        pairs = self.most_confused()[:5]
        heatmap = pages.png_uri(figures.png_bytes(self.plot_most_confused(5))) if pairs else ""
        return pages.render("evaluation.html", facts=self.facts(), pairs=pairs, heatmap=heatmap,
                            source=self.source,
                            report=self.report_dir and str(self.report_dir / "index.html"))


def calibration_of(confidence: np.ndarray, correct: np.ndarray,
                   bins: int = CALIBRATION_BINS) -> Calibration:
    """How sure the model was (`confidence`, a probability each) against how often it was
    right (`correct`, True or False each), in `bins` equal-width bins of the confidence, and
    the expected calibration error."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    result, error = [], 0.0
    for b in range(bins):
        inside = which == b
        count = int(inside.sum())
        if count:
            conf, acc = float(confidence[inside].mean()), float(correct[inside].mean())
            error += count * abs(acc - conf)
        else:
            conf = acc = math.nan
        result.append(CalibrationBin(float(edges[b]), float(edges[b + 1]), count, conf, acc))
    return Calibration(result, error / max(len(confidence), 1))


def photo_as_seen(path: Path, model: ModelInfo | None) -> np.ndarray:
    """The photo at `path` as the model sees it (a square uint8 array; without the model's
    preprocessing, a 224 px centre crop); a DataError when it cannot be read any more."""
    size, method = ((model.item_resize, model.resize_method) if model is not None
                    else (224, "crop"))
    try:
        return load_item(path, size, method)
    except (UnreadableImage, OSError) as e:
        raise DataError(f"Cannot read {path} any more ({e}).") from None


def read_results(report_dir: str | Path) -> dict:
    """A report's results.json (`Evaluation.headline`); {} when the folder has none (no
    evaluation yet, or one made before the file existed). A RunError naming the file when
    it is damaged.

    Example:
        print(read_results("runs/dogs/report").get("accuracy"))
    """
    return read_json_object(fileio.settled(Path(report_dir) / RESULTS_FILE),
                            "Evaluate the run again.") or {}
