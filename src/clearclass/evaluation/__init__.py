"""Evaluation of a trained run: what it gets right, what it confuses, where it fails most.

`evaluate(RUN)` predicts every validation photo once and derives everything from those
probabilities: accuracy, top-5 accuracy, the confusion matrix, the most confused pairs
(with a heatmap of just the classes in them, readable at 120 classes), precision, recall
and F1 per class, and the photos with the highest loss. It writes them to `RUN/report/`,
with a self-contained `index.html` that shows them all, and returns an `Evaluation` whose
`plot_*` methods draw the same figures (under the cell, in a notebook).
"""

from __future__ import annotations

import base64
import csv
import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clearclass import fileio
from clearclass.bundle import ModelInfo
from clearclass.data.decode import UnreadableImage, load_item
from clearclass.data.sources import parse_is_valid
from clearclass.errors import ClearclassError, DataError, RunError, SettingError
from clearclass.predict import Classifier, load
from clearclass.progress import bar, warn

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TOP_LOSSES = 16  # photos in the report's top-losses grid
MOST_CONFUSED_PAIRS = 10  # pairs in the report's most-confused heatmap


@dataclass
class ConfusedPair:
    actual: str
    predicted: str
    count: int


@dataclass(repr=False)
class Evaluation:
    """Validation predictions of a model, and what follows from them.

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

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(1)

    @property
    def accuracy(self) -> float:
        return float((self.predictions == self.targets).mean()) if len(self.targets) else math.nan

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
        """Counts: row = actual class, column = predicted class."""
        n = len(self.class_ids)
        matrix = np.zeros((n, n), dtype=np.int64)
        np.add.at(matrix, (self.targets, self.predictions), 1)
        return matrix

    def most_confused(self, min_count: int = 1) -> list[ConfusedPair]:
        """Pairs (actual, predicted) with their counts, most frequent mistake first."""
        matrix = self.confusion()
        np.fill_diagonal(matrix, 0)
        pairs = [(matrix[a, p], a, p) for a, p in zip(*np.nonzero(matrix >= min_count))]
        pairs.sort(key=lambda t: (-t[0], self.class_names[t[1]], self.class_names[t[2]]))
        return [ConfusedPair(self.class_names[a], self.class_names[p], int(c))
                for c, a, p in pairs]

    def per_class(self) -> list[dict]:
        """Precision, recall, F1 and support of each class."""
        matrix = self.confusion()
        rows = []
        for i, (cid, name) in enumerate(zip(self.class_ids, self.class_names)):
            tp = matrix[i, i]
            predicted, support = matrix[:, i].sum(), matrix[i, :].sum()
            precision = tp / predicted if predicted else 0.0
            recall = tp / support if support else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            rows.append({"class_id": cid, "name": name, "precision": float(precision),
                         "recall": float(recall), "f1": float(f1), "support": int(support)})
        return rows

    def top_losses(self, k: int = TOP_LOSSES) -> list[int]:
        """Indices of the k photos with the highest loss, highest first."""
        return [int(i) for i in np.argsort(-self.losses)[:k]]

    def photo(self, i: int) -> np.ndarray:
        """Photo number `i` as the model saw it (a square uint8 array)."""
        if self.model is None:
            raise ClearclassError("This evaluation does not know the model's preprocessing; "
                                  "use clearclass.evaluate(RUN) to get one that does.")
        try:
            return load_item(self.paths[i], self.model.size, self.model.resize_method)
        except (UnreadableImage, OSError) as e:
            raise DataError(f"Cannot read {self.paths[i]} any more ({e}).") from None

    def plot_confusion_matrix(self) -> Figure:
        """The whole confusion matrix (rows: actual class; columns: predicted)."""
        from clearclass import figures

        return figures.confusion_matrix(self.confusion(), self.class_names)

    def plot_most_confused(self, pairs: int = 5) -> Figure:
        """The confusion sub-matrix of only the classes in the `pairs` most frequent mistakes.

        Readable at 120 classes, where the whole matrix is not.
        """
        from clearclass import figures

        return figures.most_confused_heatmap(self.confusion(), self.class_names,
                                             self.most_confused()[:pairs])

    def plot_top_losses(self, k: int = 9) -> Figure:
        """The k photos the model got most wrong: predicted / actual / loss / probability."""
        from clearclass import figures

        worst = self.top_losses(k)
        if not worst:
            return figures.message("No validation photos.")
        return figures.top_losses(
            [self.photo(i) for i in worst],
            [(self.class_names[self.predictions[i]], self.class_names[self.targets[i]],
              float(self.losses[i]), float(self.probabilities[i, self.predictions[i]]))
             for i in worst])

    def summary(self, pairs: int = MOST_CONFUSED_PAIRS) -> str:
        """Accuracy and the most confused pairs, as lines of text."""
        lines = [f"Accuracy {self.accuracy:.2%} on {len(self.targets)} validation photos"
                 + (f"; top-5 {self.top_k_accuracy(5):.2%}" if len(self.class_ids) > 5 else "")
                 + "."]
        mistakes = self.most_confused()[:pairs]
        if mistakes:
            lines.append("Most confused (actual -> predicted: count):")
            lines += [f"  {p.actual} -> {p.predicted}: {p.count}" for p in mistakes]
        else:
            lines.append("No mistakes on the validation photos.")
        if self.report_dir:
            lines.append(f"Report: {self.report_dir / 'index.html'}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary(pairs=5)

    def _repr_html_(self) -> str:
        from clearclass import figures

        e = html.escape
        facts = _facts(self)
        pairs = self.most_confused()[:5]
        rows = "".join(f"<tr><td>{e(p.actual)}</td><td>{e(p.predicted)}</td>"
                       f"<td>{p.count}</td></tr>" for p in pairs)
        heatmap = ""
        if pairs:
            png = base64.b64encode(figures.png_bytes(self.plot_most_confused(5)))
            heatmap = (f'<img style="max-width:520px" alt="most confused classes" '
                       f'src="data:image/png;base64,{png.decode("ascii")}">')
        report = (f"<p>Report: <code>{e(str(self.report_dir / 'index.html'))}</code></p>"
                  if self.report_dir else "")
        return (
            "<div><table>" + "".join(f"<tr><th style='text-align:left'>{e(k)}</th>"
                                     f"<td style='text-align:left'>{e(v)}</td></tr>"
                                     for k, v in facts) + "</table>"
            + ("<p>Most confused (actual, predicted, count):</p><table>" + rows + "</table>"
               + heatmap if pairs else "<p>No mistakes on the validation photos.</p>")
            + report + "<p>More: <code>plot_confusion_matrix()</code>, <code>plot_most_confused"
            "(pairs=5)</code>, <code>plot_top_losses(9)</code>, <code>per_class()</code>.</p>"
            "</div>")


def evaluate(run: str | Path, top_losses: int = TOP_LOSSES, device: str = "auto") -> Evaluation:
    """Evaluate a training run on its validation photos and write RUN/report/.

    Example:
        report = clearclass.evaluate("runs/dogs")
        print(report.summary())
    """
    if not isinstance(top_losses, int) or top_losses < 0:
        raise SettingError("top_losses", f"must be a whole number >= 0; got {top_losses!r}.")
    run_dir = fileio.settled(Path(run).expanduser())
    split = run_dir / "split.csv"
    if not split.is_file():
        raise RunError(f"{run_dir} is not a training run (no split.csv). Give the folder that "
                       "`clearclass train --out` wrote.")
    if not (run_dir / "model").exists() and (run_dir / "checkpoint").is_dir():
        raise RunError(f"{run} has no finished epoch yet, only a checkpoint inside the first "
                       f"one. Continue it with `clearclass train --resume {run}`.")
    classifier = load(run_dir / "model", device=device)
    photos = _valid_photos(split, classifier)
    evaluation = predict_photos(classifier, photos)
    evaluation.report_dir = write_report(evaluation, run_dir / "report", top_losses)
    return evaluation


def predict_photos(classifier: Classifier, photos: list[tuple[Path, str]]) -> Evaluation:
    """Predict each photo once; photos that cannot be read are skipped with a warning."""
    index = {c: i for i, c in enumerate(classifier.info.class_ids)}
    kept, targets, probabilities, batch, skipped = [], [], [], [], []
    with bar("predicting validation photos", len(photos)) as progress:
        for n, (path, label) in enumerate(photos):
            try:
                batch.append(classifier.preprocess(path))
                kept.append(path)
                targets.append(index[label])
            except DataError as e:
                skipped.append(str(e))  # "PATH: reason."
            if len(batch) == 32 or (n == len(photos) - 1 and batch):
                probabilities.append(classifier.predict_proba_pixels(np.stack(batch)))
                progress.advance(len(batch))
                batch = []
    if skipped:
        warn(f"Skipped {len(skipped)} unreadable validation photo(s), e.g. {skipped[0]}")
    if not kept:
        raise DataError("No validation photo could be read; nothing to evaluate.")
    return Evaluation(list(classifier.info.class_ids), list(classifier.info.class_names), kept,
                      np.array(targets), np.concatenate(probabilities), model=classifier.info)


def _valid_photos(split: Path, classifier: Classifier) -> list[tuple[Path, str]]:
    known = set(classifier.info.class_ids)
    try:
        with open(split, newline="", encoding="utf-8") as f:
            rows = [r for line, r in enumerate(csv.DictReader(f), start=2)
                    if parse_is_valid(r["is_valid"], f"{split}, line {line}")
                    and r["label"] in known and r["path"]]
    except (KeyError, TypeError, UnicodeDecodeError, csv.Error, DataError) as e:
        # clearclass writes split.csv; this one was edited or damaged since.
        raise RunError(f"{split} is damaged ({type(e).__name__}: {e}); it must have the "
                       "columns path,label,is_valid as `clearclass train` wrote them. Restore it "
                       "or train again.") from None
    if not rows:
        raise RunError(f"{split} lists no validation photos.")
    return [(Path(r["path"]), r["label"]) for r in rows]


REPORT_FILES = ("index.html", "most_confused.csv", "per_class.csv", "confusion.png",
                "most_confused.png", "top_losses.png")


def write_report(ev: Evaluation, folder: Path, top_losses: int = TOP_LOSSES) -> Path:
    """Write the figures, CSV files and index.html of an evaluation into `folder`.

    The report replaces the folder whole (never a mix of an old and a new report), so a
    folder holding other files is refused rather than emptied.
    """
    folder = Path(folder).expanduser()
    if folder.is_file():
        raise RunError(f"{folder} is a file; give a folder for the report.")
    others = fileio.foreign_entries(folder, REPORT_FILES)
    if others:
        raise RunError(f"{folder} holds files that are not part of a report "
                       f"({', '.join(others[:3])}); give a new or empty folder.")
    with fileio.changing(folder, start_empty=True) as new:
        _write_report_files(ev, new, top_losses)
    return folder


def _write_report_files(ev: Evaluation, folder: Path, top_losses: int) -> None:
    from clearclass import figures

    pairs = ev.most_confused()
    fileio.write_csv(folder / "most_confused.csv", ("actual", "predicted", "count"),
                     [(p.actual, p.predicted, p.count) for p in pairs])
    per_class = ev.per_class()
    fileio.write_csv(folder / "per_class.csv",
                     ("class_id", "name", "precision", "recall", "f1", "support"),
                     [(r["class_id"], r["name"], f"{r['precision']:.4f}", f"{r['recall']:.4f}",
                       f"{r['f1']:.4f}", r["support"]) for r in per_class])
    figures.save(ev.plot_confusion_matrix(), folder / "confusion.png")
    figures.save(ev.plot_most_confused(MOST_CONFUSED_PAIRS), folder / "most_confused.png")
    figures.save(ev.plot_top_losses(top_losses), folder / "top_losses.png")
    fileio.write_text(folder / "index.html", _html(ev, folder, pairs, per_class,
                                                   ev.top_losses(top_losses)))


def _facts(ev: Evaluation) -> list[tuple[str, str]]:
    facts = []
    if ev.model is not None:
        facts.append(("Model", f"{ev.model.architecture}, {len(ev.class_ids)} classes, "
                               f"{ev.model.size} px ({ev.model.resize_method})"))
    facts += [("Validation photos", str(len(ev.targets))), ("Accuracy", f"{ev.accuracy:.2%}")]
    if len(ev.class_ids) > 5:
        facts.append(("Top-5 accuracy", f"{ev.top_k_accuracy(5):.2%}"))
    return facts


def _html(ev: Evaluation, folder: Path, pairs: list[ConfusedPair], per_class: list[dict],
          worst: list[int]) -> str:
    def img(name: str, alt: str) -> str:
        data = base64.b64encode((folder / name).read_bytes()).decode("ascii")
        return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'

    e = html.escape
    facts = _facts(ev)
    architecture = ev.model.architecture if ev.model else "model"
    facts_html = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in facts)
    pairs_html = "".join(
        f"<tr><td>{e(p.actual)}</td><td>{e(p.predicted)}</td><td>{p.count}</td></tr>"
        for p in pairs[:30]) or '<tr><td colspan="3">No mistakes.</td></tr>'
    worst_first = sorted(per_class, key=lambda r: (r["f1"], r["name"]))
    class_html = "".join(
        f"<tr><td>{e(r['name'])}</td><td>{r['precision']:.3f}</td><td>{r['recall']:.3f}</td>"
        f"<td>{r['f1']:.3f}</td><td>{r['support']}</td></tr>" for r in worst_first)
    losses_html = "".join(
        f"<tr><td>{e(str(ev.paths[i]))}</td><td>{e(ev.class_names[ev.predictions[i]])}</td>"
        f"<td>{e(ev.class_names[ev.targets[i]])}</td><td>{ev.losses[i]:.2f}</td></tr>"
        for i in worst)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>clearclass report: {e(architecture)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
img {{ max-width: 100%; border: 1px solid #eee; }}
h2 {{ margin-top: 2em; }}
</style></head><body>
<h1>Evaluation report</h1>
<table>{facts_html}</table>
<h2>Most confused classes</h2>
<p>Rows: actual class; columns: predicted class. Only the classes in the
{MOST_CONFUSED_PAIRS} most frequent mistakes are shown.</p>
{img("most_confused.png", "heatmap of the most confused classes")}
<table><tr><th>actual</th><th>predicted</th><th>count</th></tr>{pairs_html}</table>
<h2>Top losses</h2>
<p>The validation photos the model got most wrong: predicted / actual / loss / probability
of the prediction.</p>
{img("top_losses.png", "photos with the highest loss")}
<table><tr><th>photo</th><th>predicted</th><th>actual</th><th>loss</th></tr>{losses_html}</table>
<h2>Per class (worst F1 first)</h2>
<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>
{class_html}</table>
<h2>Confusion matrix</h2>
{img("confusion.png", "confusion matrix")}
</body></html>
"""
