"""RUN/report/: the figures and tables of an evaluation, and index.html that shows them.

index.html is one self-contained file: no script, style, font or image is fetched from
anywhere, so it opens offline, from a mail attachment or an archive, and makes no request.
The page is templates/report.html. Its confusion matrix is an SVG (report_matrix.svg) in the
view order (confused classes side by side), with every class named; a small inline script
(report.js) shows actual, predicted, count and rate on hover and the photos of a cell on
click. Only thumbnails travel in the page (the photos of
mistakes, a few of each correct cell, the top losses), which keeps a 120-class report to a
few MB.

A multi-label model's report (`MultiLabelEvaluation`) is templates/report_multi_label.html:
no confusion matrix (there is no one predicted class), but a sortable per-label table at
the model's thresholds (a row's click shows its missed and wrongly given photos), the labels
given in place of others, the most missed and most wrongly given labels, precision-recall
curves and top losses with the labels given beside the true ones; per_label.csv and
confused_labels.csv hold the tables.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clearclass import fileio, pages
from clearclass.errors import RunError
from clearclass.evaluation.multi_label import MultiLabelEvaluation
from clearclass.evaluation.results import (
    MOST_CONFUSED_PAIRS,
    RESULTS_FILE,
    TOP_LOSSES,
    Evaluation,
)
from clearclass.parallel import default_workers, map_in_order
from clearclass.progress import bar

REPORT_FILES = ("index.html", "most_confused.csv", "per_class.csv", "confusion.png",
                "most_confused.png", "top_losses.png", "calibration.png",
                "learning_curves.png", "photos_needed.csv", RESULTS_FILE,
                # a multi-label model's
                "per_label.csv", "confused_labels.csv", "precision_recall.png",
                "label_errors.png")
MISTAKE_PHOTOS = 24  # thumbnails kept per wrong cell (worst first)
CORRECT_PHOTOS = 6  # thumbnails kept per diagonal cell (least sure first)
PAIRS_LISTED = 30  # rows of the most-confused table
LOSS_THUMBNAIL_SIDE = 160
LABEL_PHOTOS = 8  # thumbnails kept of each label's missed photos, and of its wrongly given
PAIR_PHOTOS = 12  # thumbnails kept per listed (missed, given instead) pair
LABEL_LISTS = 10  # rows of the most-missed and most-wrongly-given tables


def write_report(ev: Evaluation | MultiLabelEvaluation, folder: Path,
                 top_losses: int = TOP_LOSSES, learning: object = None) -> Path:
    """Write the figures, CSV files and index.html of an evaluation into `folder`.

    `learning`: the run's learning curves and photos needed (an `advice.learning_curve.
    PhotosAdvice`), drawn with a table; or a sentence saying why there are none; or None.

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
    cleaning = folder.parent / "clean" / "index.html"
    with fileio.changing(folder, start_empty=True) as new:
        if isinstance(ev, MultiLabelEvaluation):
            _write_multi_label_files(ev, new, top_losses, cleaning)
        else:
            _write_report_files(ev, new, top_losses, cleaning=cleaning, learning=learning)
    return folder


def _write_report_files(ev: Evaluation, folder: Path, top_losses: int, cleaning: Path,
                        learning: object = None) -> None:
    from clearclass import figures

    fileio.write_json(folder / RESULTS_FILE, ev.headline())
    pairs = ev.most_confused()
    fileio.write_csv(folder / "most_confused.csv", ("actual", "predicted", "count", "rate"),
                     [(p.actual, p.predicted, p.count, f"{p.rate:.4f}") for p in pairs])
    per_class = ev.per_class()
    columns = ("position", "class_id", "name", "precision", "recall", "f1", "support",
               "most_confused_with", "confused_count")
    fileio.write_csv(folder / "per_class.csv", columns,
                     [[f"{r[c]:.4f}" if isinstance(r[c], float) else r[c] for c in columns]
                      for r in per_class])
    pngs = {}
    for name, fig in (("confusion.png", ev.plot_confusion_matrix()),
                      ("most_confused.png", ev.plot_most_confused(MOST_CONFUSED_PAIRS)),
                      ("top_losses.png", ev.plot_top_losses(top_losses)),
                      ("calibration.png", ev.plot_calibration())):
        pngs[name] = figures.png_bytes(fig)
        fileio.atomic_write(folder / name, lambda tmp, data=pngs[name]: tmp.write_bytes(data))
    page = _page(ev, pngs, pairs, per_class, ev.top_losses(top_losses),
                 cleaning if cleaning.is_file() else None)
    if learning is not None:
        page = page.replace(LEARNING_MARK, _learning_section(ev, folder, learning), 1)
    fileio.write_text(folder / "index.html", page)


LEARNING_MARK = "<!-- learning curves -->"


def _learning_section(ev: Evaluation, folder: Path, learning: object) -> str:
    """The report's learning-curve section (templates/report_learning.html), its figure
    and photos_needed.csv written beside index.html; a note when `learning` is a reason."""
    from clearclass import figures

    if isinstance(learning, str):
        return pages.render("report_learning.html", note=learning, advice=None)
    png = figures.png_bytes(learning.figure())
    fileio.atomic_write(folder / "learning_curves.png", lambda tmp: tmp.write_bytes(png))
    rows = learning.most_needed()
    fileio.write_csv(folder / "photos_needed.csv",
                     ("class_id", "photos_now", "accuracy_now", "target", "photos_needed",
                      "more", "low", "high", "reason"),
                     [(r.class_id, r.photos_now,
                       "" if r.accuracy_now is None else f"{r.accuracy_now:.4f}",
                       f"{r.target:.4f}", _blank(r.photos_needed), _blank(r.more),
                       _blank(r.low), _blank(r.high), r.reason) for r in rows])
    names = dict(zip(ev.class_ids, ev.class_names, strict=True))
    return pages.render("report_learning.html", note=None, advice=learning,
                        png=pages.png_uri(png), overall=learning.overall,
                        rows=[{"name": names.get(r.class_id, r.class_id), "row": r}
                              for r in rows])


def _blank(value: object) -> object:
    return "" if value is None else value



def _page(ev: Evaluation, pngs: dict[str, bytes], pairs: list, per_class: list[dict],
          worst: list[int], cleaning: Path | None) -> str:
    order = ev.view_order()
    position = {cls: i for i, cls in enumerate(order)}
    matrix = ev.confusion()
    cells, wanted = {}, set(worst)
    for a, p in zip(*np.nonzero(matrix)):
        photos = ev.cell_photos(int(a), int(p))[: CORRECT_PHOTOS if a == p else MISTAKE_PHOTOS]
        wanted.update(photos)
        cells[f"{position[a]},{position[p]}"] = [int(matrix[a, p]), photos]
    thumbs = _thumbnails(ev, sorted(wanted), worst)
    probability = ev.probabilities[np.arange(len(ev.targets)), ev.predictions]
    data = {
        "classes": [ev.class_names[i] for i in order],
        "support": [int(matrix[i].sum()) for i in order],
        "cells": cells,
        "photos": {str(i): [ev.paths[i].name, round(float(probability[i]), 3), thumbs[i][0]]
                   for i in sorted(wanted)},
    }
    listed = [{"a": position[ev.class_names.index(p.actual)],
               "p": position[ev.class_names.index(p.predicted)], "actual": p.actual,
               "predicted": p.predicted, "count": p.count, "rate": p.rate}
              for p in pairs[:PAIRS_LISTED]]
    losses = [{"uri": thumbs[i][1], "name": ev.paths[i].name,
               "predicted": ev.class_names[ev.predictions[i]],
               "actual": ev.class_names[ev.targets[i]], "loss": float(ev.losses[i]),
               "probability": float(probability[i])} for i in worst]
    return pages.render(
        "report.html", architecture=ev.model.architecture if ev.model else "model",
        facts=ev.facts(), cleaning=cleaning is not None, matrix=_matrix(ev, order, matrix),
        heatmap_pairs=MOST_CONFUSED_PAIRS, pairs=listed,
        most_confused_png=pages.png_uri(pngs["most_confused.png"]), per_class=per_class,
        losses=losses, expected_calibration_error=ev.calibration().expected_error,
        calibration_png=pages.png_uri(pngs["calibration.png"]), data=data)


def _thumbnails(ev: Evaluation | MultiLabelEvaluation, indices: list[int],
                worst: list[int]) -> dict[int, tuple]:
    """(small, large) data URIs per photo; the large one only for the top losses."""
    big = set(worst)

    def make(i: int) -> tuple[str, str]:
        small = pages.thumbnail(ev.paths[i])
        return small, pages.thumbnail(ev.paths[i], LOSS_THUMBNAIL_SIDE) if i in big else ""

    result = {}
    with bar("making thumbnails", len(indices)) as progress:
        for i, uris in map_in_order(make, indices, default_workers()):
            result[i] = uris
            progress.advance(1)
    return result


PER_LABEL_COLUMNS = ("position", "class_id", "name", "threshold", "precision", "recall", "f1",
                     "average_precision", "support", "found", "missed", "wrongly_given",
                     "rightly_left", "given_instead", "given_instead_count")
# Why a per-label figure is undefined, shown when the page's "undefined" is pointed at.
UNDEFINED = {"precision": "no photo was given this label", "recall": "no photo has this label",
             "f1": "", "average_precision": "no photo has this label"}


def _write_multi_label_files(ev: MultiLabelEvaluation, folder: Path, top_losses: int,
                             cleaning: Path) -> None:
    """A multi-label model's report: results.json, per_label.csv, confused_labels.csv,
    its figures and index.html (templates/report_multi_label.html)."""
    from clearclass import figures

    fileio.write_json(folder / RESULTS_FILE, ev.headline())
    pairs = ev.most_confused()
    fileio.write_csv(folder / "confused_labels.csv", ("missed", "given_instead", "count", "rate"),
                     [(p.missed, p.given, p.count, f"{p.rate:.4f}") for p in pairs])
    per_label = ev.per_label()
    fileio.write_csv(folder / "per_label.csv", PER_LABEL_COLUMNS,
                     [[_cell(r[c]) for c in PER_LABEL_COLUMNS] for r in per_label])
    pngs = {}
    for name, fig in (("precision_recall.png", ev.plot_precision_recall()),
                      ("label_errors.png", ev.plot_label_errors()),
                      ("most_confused.png", ev.plot_most_confused(MOST_CONFUSED_PAIRS)),
                      ("top_losses.png", ev.plot_top_losses(top_losses)),
                      ("calibration.png", ev.plot_calibration())):
        pngs[name] = figures.png_bytes(fig)
        fileio.atomic_write(folder / name, lambda tmp, data=pngs[name]: tmp.write_bytes(data))
    page = _multi_label_page(ev, pngs, pairs, per_label, ev.top_losses(top_losses),
                             cleaning.is_file())
    fileio.write_text(folder / "index.html", page)


def _cell(value: object) -> object:
    """A per_label.csv cell: a figure to 4 places (a threshold as model.json has it), blank
    when undefined."""
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else value


def _multi_label_page(ev: MultiLabelEvaluation, pngs: dict[str, bytes], pairs: list,
                      per_label: list[dict], worst: list[int], cleaning: bool) -> str:
    from clearclass import figures
    from clearclass.data.sources import label_text

    order = ev.view_order()
    index = {name: j for j, name in enumerate(ev.class_names)}
    rows, wanted = [], set(worst)
    for j in order:  # each row's photos: the worst of its missed and of its wrongly given
        missed, wrong = ev.label_photos(j)
        wanted.update(missed[:LABEL_PHOTOS] + wrong[:LABEL_PHOTOS])
        rows.append([len(missed), missed[:LABEL_PHOTOS], len(wrong), wrong[:LABEL_PHOTOS]])
    listed = []
    for p in pairs[:PAIRS_LISTED]:
        photos = ev.pair_photos(index[p.missed], index[p.given])[:PAIR_PHOTOS]
        wanted.update(photos)
        listed.append([p.missed, p.given, p.count, photos])
    thumbs = _thumbnails(ev, sorted(wanted), worst)
    decided = ev.decided

    def labels(row: np.ndarray) -> str:
        return label_text(tuple(ev.labels_of(row)))

    data = {"labels": [ev.class_names[j] for j in order], "rows": rows, "pairs": listed,
            "photos": {str(i): [ev.paths[i].name, thumbs[i][0], labels(ev.targets[i]),
                                labels(decided[i])] for i in sorted(wanted)}}
    losses = [{"uri": thumbs[i][1], "name": ev.paths[i].name, "given": labels(decided[i]),
               "true": labels(ev.targets[i]),
               "missed": "; ".join(ev.labels_of(ev.targets[i] & ~decided[i])),
               "wrong": "; ".join(ev.labels_of(decided[i] & ~ev.targets[i])),
               "loss": float(ev.losses[i])} for i in worst]
    drawn = min(figures.CURVES_DRAWN, int(ev.targets.any(0).sum()))
    return pages.render(
        "report_multi_label.html", architecture=ev.model.architecture if ev.model else "model",
        facts=ev.facts(), cleaning=cleaning, per_label=per_label, undefined=UNDEFINED,
        pairs=pairs[:PAIRS_LISTED], heatmap_pairs=MOST_CONFUSED_PAIRS,
        most_confused_png=pages.png_uri(pngs["most_confused.png"]),
        missed=ev.most_missed()[:LABEL_LISTS], wrong=ev.most_wrongly_given()[:LABEL_LISTS],
        label_errors_png=pages.png_uri(pngs["label_errors.png"]),
        precision_recall_png=pages.png_uri(pngs["precision_recall.png"]),
        labels_with_photos=int(ev.targets.any(0).sum()), labels_drawn=drawn, losses=losses,
        expected_calibration_error=ev.calibration().expected_error,
        calibration_png=pages.png_uri(pngs["calibration.png"]), data=data)


def _matrix(ev: Evaluation, order: list[int], matrix: np.ndarray) -> dict:
    """The geometry and colours of the confusion matrix that report_matrix.svg draws: a rect
    per non-empty cell, every class named."""
    n = len(order)
    # 14 px rows hold 11 px text with its line spacing: names legible, none overlapping.
    cell = max(14, min(32, 700 // max(n, 1)))
    font = min(13, cell - 3)
    names = [ev.class_names[i] for i in order]
    label = min(280, 16 + int(0.62 * font * max((len(s) for s in names), default=1)))
    side = n * cell
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    off = rates.copy()
    np.fill_diagonal(off, 0)
    worst = float(off.max()) or 1.0
    cells = []
    for r, a in enumerate(order):
        for c, p in enumerate(order):
            if matrix[a, p]:
                colour = (_blend((255, 255, 255), (8, 81, 156), rates[a, p]) if a == p else
                          _blend((255, 235, 230), (165, 15, 21), off[a, p] / worst))
                dark = rates[a, p] > 0.5 if a == p else off[a, p] / worst > 0.5
                cells.append({"x": c * cell, "y": r * cell, "colour": colour,
                              # room for the count from 24 px cells (up to about 29 classes)
                              "count": int(matrix[a, p]) if cell >= 24 else None,
                              "cx": f"{c * cell + cell / 2:g}", "cy": f"{r * cell + cell / 2:g}",
                              "ink": "#fff" if dark else "#222"})
    return {"width": label + side + 2, "height": label + side + 2, "font": font, "cell": cell,
            "label": label, "side": side, "cells": cells,
            "names": [{"name": name, "short": _short(name),
                       # the middle of its row, and of its column
                       "at": f"{label + r * cell + cell / 2:.1f}"}
                      for r, name in enumerate(names)]}


def _blend(low: tuple, high: tuple, t: float) -> str:
    t = float(min(max(t, 0.0), 1.0)) ** 0.7  # lift small rates: one mistake stays visible
    return "#" + "".join(f"{round(lo + (hi - lo) * t):02x}" for lo, hi in zip(low, high))


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"

