"""What a multi-label model's predictions on labelled photos say.

A multi-label model gives each photo a set of labels, every label whose probability reaches
its threshold (model.json's), so there is no one predicted class to put in a confusion
matrix. What matters instead, and what `MultiLabelEvaluation` derives from one probability
row per photo:

- the headline figures training reports (`task.multi_label_scores`): fastai's
  accuracy_multi, micro and macro F1, the mean of the labels' average precision; and the
  share of photos given exactly their labels;
- per label, at its threshold: precision, recall, F1, average precision and support, with
  its photos found, missed and wrongly given (scikit-learn's `multilabel_confusion_matrix`,
  less the photos rightly left without it);
- the labels given in place of each other: a photo that has label A and is not given it,
  but is given B, which it does not have, counts once for (A missed, B given); the
  counterpart of the confusion matrix's off-diagonal cells, ordered the same way
  (`confusion_order`);
- each label's precision against its recall over every threshold, its threshold marked;
- the photos with the highest loss (binary cross-entropy averaged over the labels, as
  training's), with the labels given beside the labels they have;
- calibration over every (photo, label) probability.

A label no photo has has no recall and no average precision: they are None (blank in the
CSV files, "undefined" on the pages), never NaN text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from clearclass.bundle import ModelInfo
from clearclass.evaluation.results import (
    CALIBRATION_BINS,
    MOST_CONFUSED_PAIRS,
    TOP_LOSSES,
    Calibration,
    calibration_of,
    confusion_order,
    photo_as_seen,
)
from clearclass.task import (
    MultiLabel,
    average_precisions,
    f1_scores,
    multi_label_scores,
    precision_recall_curve,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LABELS_LISTED = 5  # labels in each of the summary's most-missed and most-wrongly-given lines


@dataclass
class LabelConfusion:
    """A mistake the model makes: `count` photos that have `missed` and are not given it,
    but are given `given`, which they do not have; `rate` is the share of `missed`'s
    photos."""

    missed: str
    given: str
    count: int
    rate: float = math.nan


@dataclass(repr=False)
class MultiLabelEvaluation:
    """A multi-label model's predictions on labelled photos, and what follows from them.

    `targets` has a row per photo, 1 for each label it has; `probabilities` each label's
    sigmoid; a label is given when its probability reaches its `thresholds` entry.
    `tta_probabilities`, with test-time augmentation, the same averaged over the photo and
    its mirror image.

    `clearclass.evaluate` gives one for a multi-label run; from a model's probabilities:

    Example:
        report = MultiLabelEvaluation(
            ["cat", "dog"], ["cat", "dog"], [Path("a.jpg"), Path("b.jpg"), Path("c.jpg")],
            targets=np.array([[1, 0], [1, 1], [0, 1]]),
            probabilities=np.array([[0.9, 0.1], [0.3, 0.8], [0.6, 0.7]]), thresholds=0.5)
        print(report.summary())  # cat missed on b.jpg; cat given to c.jpg, which has a dog
        report.plot_precision_recall()  # a matplotlib figure; shown under a notebook cell
    """

    class_ids: list[str]
    class_names: list[str]
    paths: list[Path]
    targets: np.ndarray  # photos x labels, 1 where the photo has the label
    probabilities: np.ndarray  # photos x labels
    thresholds: np.ndarray  # per label: given at or over it
    model: ModelInfo | None = None
    report_dir: Path | None = None
    tta_probabilities: np.ndarray | None = None
    source: str = "validation photos"
    _order: list[int] | None = field(default=None, init=False, compare=False)
    FIGURES: ClassVar[tuple[str, ...]] = ("precision_recall.png", "label_errors.png",
                                          "most_confused.png", "calibration.png",
                                          "top_losses.png")

    def __post_init__(self) -> None:
        self.targets = np.asarray(self.targets, dtype=bool)
        self.thresholds = np.broadcast_to(np.asarray(self.thresholds, dtype=np.float64),
                                          (len(self.class_ids),)).copy()

    # --- what was decided ------------------------------------------------------------------

    @property
    def decided(self) -> np.ndarray:
        """photos x labels: True where the label is given (as `Classifier.predict` decides)."""
        return MultiLabel(self.thresholds).decide(self.probabilities)

    def label_counts(self) -> dict[str, np.ndarray]:
        """Per label: photos `found` (given the label they have), `missed`, `wrongly_given`
        (given it without having it) and `rightly_left` (neither): scikit-learn's
        multilabel_confusion_matrix as [[rightly_left, wrongly_given], [missed, found]]."""
        decided, targets = self.decided, self.targets
        return {"found": (decided & targets).sum(0), "missed": (~decided & targets).sum(0),
                "wrongly_given": (decided & ~targets).sum(0),
                "rightly_left": (~decided & ~targets).sum(0)}

    def scores(self, probabilities: np.ndarray | None = None) -> dict[str, float]:
        """accuracy (fastai's accuracy_multi: the share of (photo, label) decisions right),
        f1_micro, f1_macro, mean_ap (NaN when no photo has any label) and exact_match (the
        share of photos given exactly their labels), at the thresholds; of `probabilities`
        (default: the plain ones)."""
        probabilities = self.probabilities if probabilities is None else probabilities
        if not len(self.targets):
            return dict.fromkeys(("accuracy", "f1_micro", "f1_macro", "mean_ap",
                                  "exact_match"), math.nan)
        scores = multi_label_scores(probabilities, self.targets, self.thresholds)
        decided = MultiLabel(self.thresholds).decide(probabilities)
        scores["exact_match"] = float((decided == self.targets).all(1).mean())
        return scores

    def tta_scores(self) -> dict[str, float] | None:
        """`scores` with test-time augmentation; None when it was not measured."""
        return None if self.tta_probabilities is None else self.scores(self.tta_probabilities)

    @property
    def accuracy(self) -> float:
        """fastai's accuracy_multi: the share of (photo, label) decisions that are right."""
        return self.scores()["accuracy"]

    @property
    def tta_accuracy(self) -> float | None:
        """accuracy_multi with test-time augmentation, None when it was not measured."""
        scores = self.tta_scores()
        return None if scores is None or not len(self.targets) else scores["accuracy"]

    @property
    def losses(self) -> np.ndarray:
        """Each photo's binary cross-entropy, averaged over the labels (training's loss)."""
        p = np.clip(self.probabilities.astype(np.float64), 1e-12, 1 - 1e-12)
        return -np.where(self.targets, np.log(p), np.log1p(-p)).mean(1)

    def top_losses(self, k: int = TOP_LOSSES) -> list[int]:
        """Indices of the k photos with the highest loss, highest first."""
        return [int(i) for i in np.argsort(-self.losses, kind="stable")[:k]]

    # --- labels given in place of each other ------------------------------------------------

    def confusion_pairs(self) -> np.ndarray:
        """labels x labels: [a, b] counts the photos that have label a and are not given it,
        but are given b, which they do not have (the diagonal is 0)."""
        decided = self.decided
        missed = (self.targets & ~decided).astype(np.int64)
        wrong = (decided & ~self.targets).astype(np.int64)
        return missed.T @ wrong

    def view_order(self) -> list[int]:
        """Label indices in the order the report shows them: labels given in place of each
        other side by side, as a single-label report orders its classes (`confusion_order`
        of the pairs, the photos found on the diagonal)."""
        if self._order is None:
            matrix = self.confusion_pairs()
            np.fill_diagonal(matrix, self.label_counts()["found"])
            self._order = [int(i) for i in confusion_order(matrix)]
        return self._order

    def most_confused(self, min_count: int = 1) -> list[LabelConfusion]:
        """(missed, given) pairs with their counts and rates, the most frequent first."""
        matrix = self.confusion_pairs()
        support = self.targets.sum(0)
        pairs = [(int(matrix[a, b]), a, b) for a, b in zip(*np.nonzero(matrix >= min_count))]
        pairs.sort(key=lambda t: (-t[0], -t[0] / support[t[1]], self.class_names[t[1]],
                                  self.class_names[t[2]]))
        return [LabelConfusion(self.class_names[a], self.class_names[b], count,
                               float(count / support[a])) for count, a, b in pairs]

    def pair_photos(self, missed: int, given: int) -> list[int]:
        """Indices of the photos that have label `missed`, are not given it, and are given
        `given`, which they do not have; the highest loss first."""
        decided = self.decided
        inside = np.nonzero(self.targets[:, missed] & ~decided[:, missed]
                            & decided[:, given] & ~self.targets[:, given])[0]
        return [int(i) for i in inside[np.argsort(-self.losses[inside], kind="stable")]]

    def label_photos(self, label: int) -> tuple[list[int], list[int]]:
        """The photos that have label `label` and are not given it (the least probable
        first), and those given it without having it (the most probable first)."""
        decided, p = self.decided[:, label], self.probabilities[:, label]
        missed = np.nonzero(self.targets[:, label] & ~decided)[0]
        wrong = np.nonzero(~self.targets[:, label] & decided)[0]
        return ([int(i) for i in missed[np.argsort(p[missed], kind="stable")]],
                [int(i) for i in wrong[np.argsort(-p[wrong], kind="stable")]])

    # --- per label --------------------------------------------------------------------------

    def per_label(self) -> list[dict]:
        """Per label, in the view order, at its threshold: precision (None when no photo is
        given the label), recall (None when no photo has it), F1 (0 when it is neither on
        nor given to any photo, as scikit-learn's zero_division=0 and the macro F1 count
        it), average_precision (None when no photo has it), support (photos that have it),
        found, missed, wrongly_given, rightly_left, and the label most often given in its
        place when it is missed."""
        counts = self.label_counts()
        f1, _ = f1_scores(self.decided, self.targets)
        precisions = average_precisions(self.targets, self.probabilities)
        pairs = self.confusion_pairs()
        rows = []
        for position, j in enumerate(self.view_order()):
            found, missed = int(counts["found"][j]), int(counts["missed"][j])
            wrong = int(counts["wrongly_given"][j])
            given, support = found + wrong, found + missed
            instead = int(pairs[j].argmax())
            rows.append({
                "position": position, "class_id": self.class_ids[j],
                "name": self.class_names[j], "threshold": float(self.thresholds[j]),
                "precision": found / given if given else None,
                "recall": found / support if support else None, "f1": float(f1[j]),
                "average_precision": None if math.isnan(precisions[j]) else float(precisions[j]),
                "support": support, "found": found, "missed": missed, "wrongly_given": wrong,
                "rightly_left": int(counts["rightly_left"][j]),
                "given_instead": self.class_names[instead] if pairs[j, instead] else "",
                "given_instead_count": int(pairs[j, instead])})
        return rows

    def per_class(self) -> list[dict]:
        """`per_label`, by the name a single-label evaluation gives its table."""
        return self.per_label()

    def most_missed(self) -> list[dict]:
        """The `per_label` rows of the labels missed on any photo, the most missed first."""
        return sorted((r for r in self.per_label() if r["missed"]),
                      key=lambda r: (-r["missed"], -r["missed"] / r["support"], r["name"]))

    def most_wrongly_given(self) -> list[dict]:
        """The `per_label` rows of the labels given to any photo that lacks them, the most
        often first."""
        return sorted((r for r in self.per_label() if r["wrongly_given"]),
                      key=lambda r: (-r["wrongly_given"], r["name"]))

    def precision_recall_curves(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
        """Per label (the model's order): its (precision, recall, thresholds) over every
        threshold that changes them (`task.precision_recall_curve`); None for a label no
        photo has."""
        return [precision_recall_curve(self.targets[:, j], self.probabilities[:, j])
                if self.targets[:, j].any() else None for j in range(len(self.class_ids))]

    def calibration(self, bins: int = CALIBRATION_BINS) -> Calibration:
        """Every (photo, label) probability against how often the photo has the label, in
        `bins` equal-width bins, and the expected error."""
        return calibration_of(self.probabilities.ravel(), self.targets.ravel(), bins)

    def photo(self, i: int) -> np.ndarray:
        """Photo number `i` as the model saw it (a square uint8 array)."""
        return photo_as_seen(self.paths[i], self.model)

    def labels_of(self, row: np.ndarray) -> list[str]:
        """The names of the labels a row of `targets` or `decided` holds."""
        return [self.class_names[j] for j in np.flatnonzero(row)]

    # --- figures ----------------------------------------------------------------------------

    def plot_precision_recall(self, labels: int | None = None) -> Figure:
        """Each label's precision against recall over every threshold, its threshold marked;
        past `labels` labels (default 10) the ones of lowest average precision in colour, the
        others grey; beside it every label's average precision."""
        from clearclass import figures

        curves = self.precision_recall_curves()
        rows = {r["class_id"]: r for r in self.per_label()}
        points = [(rows[c]["precision"], rows[c]["recall"]) for c in self.class_ids]
        return figures.precision_recall(
            [None if c is None else (c[0], c[1]) for c in curves], self.class_names,
            [math.nan if rows[c]["average_precision"] is None else rows[c]["average_precision"]
             for c in self.class_ids], points,
            figures.CURVES_DRAWN if labels is None else labels)

    def plot_label_errors(self, labels: int | None = None) -> Figure:
        """Per label, the photos found, missed and wrongly given, the labels with most
        errors first (at most `labels`, default 30)."""
        from clearclass import figures

        counts = self.label_counts()
        return figures.label_errors(self.class_names, counts["found"].tolist(),
                                    counts["missed"].tolist(),
                                    counts["wrongly_given"].tolist(),
                                    figures.LABEL_ERRORS_SHOWN if labels is None else labels)

    def plot_most_confused(self, pairs: int = 5) -> Figure:
        """Photos with one label missed and another wrongly given, among the labels of the
        `pairs` most frequent such pairs (rows: missed; columns: given instead)."""
        from clearclass import figures

        return figures.most_confused_heatmap(
            self.confusion_pairs(), self.class_names,
            [(p.missed, p.given) for p in self.most_confused()[:pairs]],
            title="Labels given in place of others", rows="missed (on the photo, not given)",
            columns="given instead (not on the photo)", counted="photos",
            nothing="No label given in place of another.")

    def plot_calibration(self) -> Figure:
        """Reliability diagram of every (photo, label) probability."""
        from clearclass import figures

        return figures.reliability_diagram(
            self.calibration(), confidence="probability of a label (every photo, every label)",
            outcome="share of them on the photo", counted="photo-label pairs")

    def plot_top_losses(self, k: int = 9) -> Figure:
        """The k photos the model got most wrong: the labels given / the labels they have /
        the loss."""
        from clearclass import figures
        from clearclass.data.sources import label_text

        worst = self.top_losses(k)
        if not worst:
            return figures.message("No photos.")
        decided = self.decided
        return figures.label_set_top_losses(
            [self.photo(i) for i in worst],
            [(label_text(tuple(self.labels_of(decided[i]))),
              label_text(tuple(self.labels_of(self.targets[i]))), float(self.losses[i]))
             for i in worst])

    # --- words ------------------------------------------------------------------------------

    def threshold_text(self) -> str:
        """The thresholds in words: one for all, or their range."""
        low, high = float(self.thresholds.min()), float(self.thresholds.max())
        if math.isclose(low, high):
            return f"{low:g} for every label"
        return f"per label, from {low:.3g} to {high:.3g} (each in the per-label table)"

    def facts(self) -> list[tuple[str, str]]:
        """The headline figures, as (name, value) pairs of text."""
        facts = []
        if self.model is not None:
            facts.append(("Model", f"{self.model.architecture}, multi-label, "
                                   f"{len(self.class_ids)} labels, {self.model.item_resize} px "
                                   f"({self.model.resize_method})"))
        facts.append(("Photos", f"{len(self.targets)} {self.source}"))
        facts.append(("Thresholds", f"{self.threshold_text()}: a label is given when its "
                                    "probability reaches its threshold"
                                    + (" (model.json)" if self.model is not None else "")))
        facts += _score_facts(self.scores(), self.targets)
        tta = self.tta_scores()
        if tta is not None:
            facts.append(("With test-time augmentation",
                          _scores_line(tta) + " (the photo and its mirror image, averaged)"))
        absent = [self.class_names[j] for j in np.flatnonzero(~self.targets.any(0))]
        if absent and len(self.targets):
            facts.append(("Labels on no photo",
                          f"{len(absent)}: {', '.join(absent[:8])}"
                          + (", ..." if len(absent) > 8 else "")
                          + " (their recall and average precision are undefined)"))
        if len(self.targets):
            facts.append(("Expected calibration error",
                          f"{self.calibration().expected_error:.3f} over every photo's "
                          "probability of every label (0 = probabilities match how often "
                          "the photos have the labels)"))
        return facts

    def headline(self) -> dict:
        """The headline numbers, as the report's results.json keeps them: what the photos
        were, how many, accuracy (accuracy_multi, as training's metrics.csv), f1_micro,
        f1_macro, mean_ap and exact_match, and each again with test-time augmentation
        (tta_accuracy, tta_f1_micro, ...; None without `tta`)."""
        scores, tta = self.scores(), self.tta_scores() or {}
        result = {"source": self.source, "photos": len(self.targets), "task": "multi"}
        for name, value in scores.items():
            result[name] = _number(value)
        for name in scores:
            result[f"tta_{name}"] = _number(tta.get(name))
        result["run_id"] = (self.model.training or {}).get("run_id") if self.model else None
        return result

    def tracked_scores(self) -> dict[str, float]:
        """What `train --track` records of this evaluation: the headline scores (with `tta`,
        their tta_ twins), each that is defined."""
        return {name: value for name, value in self.headline().items()
                if name not in ("source", "photos", "task", "run_id")
                and isinstance(value, float)}

    def summary(self, pairs: int = MOST_CONFUSED_PAIRS) -> str:
        """The headline scores, the labels given in place of others, and the most missed
        and most wrongly given labels, as lines of text."""
        lines = [f"{_scores_line(self.scores())} on {len(self.targets)} {self.source}."]
        tta = self.tta_scores()
        if tta is not None:
            lines.append(f"With test-time augmentation: {_scores_line(tta)}.")
        mistakes = self.most_confused()[:pairs]
        if mistakes:
            lines.append("Given in place of another (missed -> given instead: photos, share "
                         "of the missed label's photos):")
            lines += [f"  {p.missed} -> {p.given}: {p.count} ({p.rate:.0%})" for p in mistakes]
        missed, wrong = self.most_missed(), self.most_wrongly_given()
        if missed:
            lines.append("Most missed: " + ", ".join(
                f"{r['name']} {r['missed']} of {r['support']}" for r in missed[:LABELS_LISTED]))
        if wrong:
            lines.append("Most wrongly given: " + ", ".join(
                f"{r['name']} {r['wrongly_given']}" for r in wrong[:LABELS_LISTED]))
        if not missed and not wrong:
            lines.append(f"No label missed or wrongly given on the {self.source}.")
        if self.report_dir:
            lines.append(f"Report: {self.report_dir / 'index.html'}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary(pairs=5)

    def _repr_html_(self) -> str:
        from clearclass import figures, pages

        curves = pages.png_uri(figures.png_bytes(self.plot_precision_recall())) \
            if self.targets.any() else ""
        return pages.render("evaluation_multi_label.html", facts=self.facts(),
                            pairs=self.most_confused()[:5],
                            missed=self.most_missed()[:LABELS_LISTED],
                            wrong=self.most_wrongly_given()[:LABELS_LISTED],
                            curves=curves, source=self.source,
                            report=self.report_dir and str(self.report_dir / "index.html"))


def _number(value: float | None) -> float | None:
    """A score as JSON keeps it: None when undefined (NaN is not JSON)."""
    return None if value is None or math.isnan(value) else float(value)


def _scores_line(scores: dict[str, float]) -> str:
    mean_ap = "undefined" if math.isnan(scores["mean_ap"]) else f"{scores['mean_ap']:.3f}"
    return (f"accuracy_multi {scores['accuracy']:.2%}, F1 micro {scores['f1_micro']:.3f}, "
            f"F1 macro {scores['f1_macro']:.3f}, mean average precision {mean_ap}, "
            f"exact label set {scores['exact_match']:.2%}")


def _score_facts(scores: dict[str, float], targets: np.ndarray) -> list[tuple[str, str]]:
    with_photos = int(targets.any(0).sum())
    mean_ap = ("undefined: no photo has any label" if math.isnan(scores["mean_ap"]) else
               f"{scores['mean_ap']:.3f} (over the {with_photos} labels that some photo has)"
               if with_photos < targets.shape[1] else f"{scores['mean_ap']:.3f}")
    return [("Accuracy (accuracy_multi)",
             f"{scores['accuracy']:.2%} of the photo-label decisions right (each label of "
             "each photo given or not, as it should be)"),
            ("F1 micro", f"{scores['f1_micro']:.3f} (over every photo-label pair)"),
            ("F1 macro", f"{scores['f1_macro']:.3f} (the mean of the labels' F1)"),
            ("Mean average precision", mean_ap),
            ("Exact label set", f"{scores['exact_match']:.2%} of the photos given exactly "
                                "their labels")]
