"""The figures: confusion matrices, top losses, grids of photos, the learning-rate curve,
and a multi-label model's precision-recall curves and errors per label.

Each function returns a matplotlib `Figure` made without pyplot: nothing is drawn on a
screen, the global backend is left alone (a notebook keeps its inline one), and a figure
that is not kept is simply garbage. `save` writes one as a PNG; in a Jupyter notebook a
figure that is a cell's last expression shows under the cell. Sizes grow with the number of
classes so that labels stay legible; past 30 classes the full confusion matrix shows rates
without numbers, and the most-confused heatmap carries the detail.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from clearclass import fileio
from clearclass.fileio import shown_name
from clearclass.progress import in_notebook

ANNOTATE_UP_TO = 30  # classes; beyond this, numbers in cells would be unreadable


def confusion_matrix(matrix: np.ndarray, names: Sequence[str]) -> Figure:
    """Full confusion matrix: rows actual, columns predicted.

    The diagonal (share of each class recognised) is drawn in blue and the mistakes (share of
    the actual class sent to each wrong class) in red, on a scale of their own: with many
    classes a single scale leaves the mistakes too faint to see.
    """
    n = len(names)
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    eye = np.eye(n, dtype=bool)
    many = n > ANNOTATE_UP_TO
    side = 0.6 + 0.16 * n if many else max(5.0, 1.5 + 0.45 * n)
    font = 6 if many else 9  # 6 pt at 150 dpi: 12.5 px text on 24 px rows
    fig = new_figure(side + 2.5, side + 1.5, dpi=150 if many else 100)
    ax = fig.subplots()
    mistakes = np.ma.masked_where(eye | (rates == 0), rates)
    worst = float(mistakes.max()) if mistakes.count() else 1.0
    ax.imshow(np.ma.masked_where(~eye, rates), cmap="Blues", vmin=0, vmax=1)
    red = ax.imshow(mistakes, cmap="Reds", vmin=0, vmax=worst)
    shown_names = [_short(s) for s in names]
    ax.set_xticks(range(n), shown_names, rotation=90, fontsize=font)
    ax.set_yticks(range(n), shown_names, fontsize=font)
    if not many:
        for a in range(n):
            for p in range(n):
                if matrix[a, p]:
                    dark = rates[a, p] > 0.5 if a == p else rates[a, p] > worst / 2
                    ax.text(p, a, str(matrix[a, p]), ha="center", va="center", fontsize=font,
                            color="white" if dark else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title("Confusion matrix (blue: share recognised; red: share sent to a wrong class)")
    fig.colorbar(red, ax=ax, fraction=0.03, pad=0.02, label="share of the actual class")
    return fig


def most_confused_heatmap(matrix: np.ndarray, names: Sequence[str],
                          pairs: Sequence[tuple[str, str]], *,
                          title: str = "Most confused classes (grey: correct)",
                          rows: str = "actual", columns: str = "predicted",
                          counted: str = "mistakes",
                          nothing: str = "No mistakes on the validation photos.") -> Figure:
    """The sub-matrix of `matrix` over the names in `pairs` (row name, column name), with
    counts; the diagonal, when it holds any, in grey italics. By default a confusion matrix's
    most confused classes; the words (`title`, what `rows` and `columns` are, what is
    `counted`, the message when there is `nothing`) say what another matrix holds."""
    index = {name: i for i, name in enumerate(names)}
    chosen: list[int] = []
    for pair in pairs:
        for name in pair:
            if index[name] not in chosen:
                chosen.append(index[name])
    if not chosen:
        return message(nothing)
    sub = matrix[np.ix_(chosen, chosen)]
    off = sub.copy()
    np.fill_diagonal(off, 0)
    k = len(chosen)
    side = max(4.5, 1.8 + 0.55 * k)
    fig = new_figure(side + 1.5, side)
    ax = fig.subplots()
    im = ax.imshow(off, cmap="Reds", vmin=0, vmax=max(int(off.max()), 1))
    shown_names = [_short(names[i], 28) for i in chosen]
    ax.set_xticks(range(k), shown_names, rotation=60, ha="right", fontsize=9)
    ax.set_yticks(range(k), shown_names, fontsize=9)
    for a in range(k):
        for p in range(k):
            value = sub[a, p]
            if value:
                diagonal = a == p
                ax.text(p, a, str(value), ha="center", va="center", fontsize=9,
                        color="gray" if diagonal else
                        ("white" if off[a, p] > off.max() / 2 else "black"),
                        style="italic" if diagonal else "normal")
    ax.set_xlabel(columns)
    ax.set_ylabel(rows)
    ax.set_title(_label(title))
    bar = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label=counted)
    bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 0.25 mistakes
    return fig


COOCCURRENCE_LABELS = 30  # labels on the heatmap; past this, numbers in cells blur


def label_cooccurrence(matrix: np.ndarray, names: Sequence[str],
                       limit: int = COOCCURRENCE_LABELS) -> Figure:
    """Which labels occur together: photos with both labels of each pair (`matrix`, labels
    x labels, its diagonal the photos with each label), for the `limit` labels on the most
    photos, every cell counted. A label pair is red by how many photos have both; the
    diagonal is grey, as it counts one label."""
    order = sorted(range(len(names)), key=lambda i: (-matrix[i, i], i))[:limit]
    if not order:
        return message("No labels.")
    sub = matrix[np.ix_(order, order)]
    off = sub.copy()
    np.fill_diagonal(off, 0)
    k = len(order)
    side = max(4.5, 1.8 + 0.38 * k)
    font = 9 if k <= 15 else 7
    fig = new_figure(side + 1.5, side)
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_where(np.eye(k, dtype=bool), off), cmap="Reds", vmin=0,
                   vmax=max(int(off.max()), 1))
    shown_names = [_short(names[i], 24) for i in order]
    ax.set_xticks(range(k), shown_names, rotation=60, ha="right", fontsize=font)
    ax.set_yticks(range(k), shown_names, fontsize=font)
    for a in range(k):
        for b in range(k):
            if sub[a, b]:
                ax.text(b, a, str(sub[a, b]), ha="center", va="center", fontsize=font - 1,
                        color="gray" if a == b else
                        ("white" if off[a, b] > off.max() / 2 else "black"),
                        style="italic" if a == b else "normal")
    title = "Labels that occur together (photos with both; grey: photos with the label)"
    if k < len(names):
        title += f"\nthe {k} labels on the most photos, of {len(names)}"
    ax.set_title(title, fontsize=10)
    bar = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="photos with both labels")
    bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def reliability_diagram(calibration, confidence: str = "confidence (probability of the "
                        "predicted class)", outcome: str = "accuracy",
                        counted: str = "photos") -> Figure:
    """Accuracy against confidence per bin (a `Calibration`), the photos per bin below.
    `confidence`, `outcome` and `counted` name the axes where the bins hold something else
    (a multi-label model's probability of each label, how often the photo has it)."""
    fig = new_figure(6, 6)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    bins = [b for b in calibration.bins if b.count]
    width = calibration.bins[0].high - calibration.bins[0].low if calibration.bins else 0.1
    top.plot([0, 1], [0, 1], "--", color="gray", label="perfectly calibrated")
    top.bar([b.low for b in bins], [b.accuracy for b in bins], width=width, align="edge",
            color="tab:blue", edgecolor="white", label=outcome)
    top.bar([b.low for b in bins], [b.confidence - b.accuracy for b in bins], width=width,
            bottom=[b.accuracy for b in bins], align="edge", color="tab:red", alpha=0.3,
            edgecolor="tab:red", hatch="//", label="gap to the bin's mean confidence")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel(outcome)
    top.set_title(f"Calibration: expected error {calibration.expected_error:.3f}")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar([b.low for b in bins], [b.count for b in bins], width=width, align="edge",
               color="gray", edgecolor="white")
    bottom.set_xlabel(confidence)
    bottom.set_ylabel(counted)
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def top_losses(images: Sequence[np.ndarray], captions: Sequence[tuple]) -> Figure:
    """Photos titled predicted / actual / loss / probability, as fastai's plot_top_losses."""
    titles = [f"{_cut(p, 18)} / {_cut(a, 18)}\n{loss:.2f} / {prob:.2f}"
              for p, a, loss, prob in captions]
    return photo_grid(images, titles, "predicted / actual / loss / probability")


def label_set_top_losses(images: Sequence[np.ndarray],
                         captions: Sequence[tuple[str, str, float]]) -> Figure:
    """Multi-label photos titled with the labels given, the labels they have, and the loss."""
    titles = [f"given: {_cut(given, 26)}\ntrue: {_cut(true, 26)}\nloss {loss:.2f}"
              for given, true, loss in captions]
    return photo_grid(images, titles, "labels given / labels the photo has / loss")


def photo_grid(images: Sequence[np.ndarray], titles: Sequence[str], suptitle: str = "",
               columns: int = 4) -> Figure:
    """A grid of uint8 photos with a title over each."""
    n = max(len(images), 1)
    columns = min(columns, n)
    rows = -(-n // columns)
    fig = new_figure(2.7 * columns, 3.0 * rows)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(image)
        ax.set_title(_label(title), fontsize=8)
    if suptitle:
        fig.suptitle(_label(suptitle))
    return fig


def class_samples(samples: Sequence[tuple[str, Sequence[np.ndarray]]]) -> Figure:
    """One row per class: its name, then a few of its photos."""
    rows = max(len(samples), 1)
    columns = max((len(imgs) for _, imgs in samples), default=1)
    fig = new_figure(1.6 * columns + 1.6, 1.6 * rows)
    axes = fig.subplots(rows, columns, squeeze=False)
    for r, (name, imgs) in enumerate(samples):
        for c in range(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(imgs):
                ax.imshow(imgs[c])
        axes[r, 0].set_ylabel(_short(name, 22), rotation=0, ha="right", va="center", fontsize=9)
    return fig


def learning_rate_curve(rates: Sequence[float], losses: Sequence[float],
                        suggestion: float) -> Figure:
    """Smoothed training loss against the learning rate, the suggestion marked."""
    fig = new_figure(6, 4)
    ax = fig.subplots()
    ax.plot(rates, losses)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    if len(rates):
        i = int(np.argmin(np.abs(np.log(rates) - np.log(suggestion))))
        ax.plot(rates[i], losses[i], "o", color="tab:red", label=f"suggested: {suggestion:.1e}")
        ax.legend()
    return fig


LEARNING_CURVE_CLASSES = 8  # classes drawn beside the overall curve; more would be a tangle


def learning_curves(curves, needed: Sequence, target: float,
                    names: Sequence[str] | None = None) -> Figure:
    """Validation accuracy against training photos (log scale): overall on the left, on the
    right the classes furthest below `target` (at most 8, named in the title); points are
    the mean over seeds with their range, the fitted power laws dashed, the target dotted.
    `curves` is an `advice.learning_curve.LearningCurves`, `needed` its `photos_needed`,
    `names` the classes' display names (default: their ids).
    """
    names = list(curves.class_ids) if names is None else list(names)
    # A multi-label run's curves: each label's F1 against the training photos with it.
    metric = curves.metric
    kind, plural, photos_of = (("class", "classes", "of the class") if metric == "accuracy"
                               else ("label", "labels", "with the label"))
    fig = new_figure(12, 4.6)
    overall, classes = fig.subplots(1, 2)
    total = curves.photos_total[:, 0]
    _curve(overall, total, curves.accuracy, curves.overall_fit(), "black", f"all {plural}")
    overall.set_xlabel("training photos" + (", all classes" if kind == "class" else ""))
    overall.set_title(f"Overall: {metric} {curves.accuracy_now:.1%} now with "
                      f"{int(total[-1]):,} photos", fontsize=10)
    known = [c for c in range(len(curves.class_ids)) if curves.valid_photos[c] > 0]
    # Furthest below by the accuracy the photos needed count from (the network's, when given).
    gap = {c: target - (needed[c].accuracy_now if needed[c].accuracy_now is not None
                        else float(np.mean(curves.class_accuracy[-1, :, c]))) for c in known}
    shown = sorted(known, key=lambda c: -gap[c])[:LEARNING_CURVE_CLASSES]
    colours = [f"C{i}" for i in range(10)]
    for i, c in enumerate(shown):
        row = needed[c]
        more = f"+{row.more:,}" if row.more is not None else "?"
        _curve(classes, curves.photos[:, 0, c], curves.class_accuracy[:, :, c],
               curves.class_fit(c), colours[i % 10],
               f"{_short(shown_name(names[c]), 22)} ({more})")
    classes.set_xlabel(f"training photos {photos_of}")
    many = len(curves.class_ids) > len(shown)
    classes.set_title(
        (f"{len(shown)} of {len(curves.class_ids)} {plural}, furthest below the target"
         if many else f"Each {kind}") + "\n(photos to add; ? = not enough data to say)",
        fontsize=10)
    for ax in (overall, classes):
        ax.axhline(target, color="tab:red", linestyle=":", label=f"target {target:.1%}")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylabel(f"validation {metric}")
        ax.grid(alpha=0.3)
    overall.legend(fontsize=8, loc="lower right")
    classes.legend(fontsize=7, loc="lower right", ncol=1 if len(shown) <= 4 else 2)
    fig.suptitle("Learning curves: heads on the network's features (dashed: fitted power "
                 "law)", fontsize=11)
    return fig


def _curve(ax, photos: np.ndarray, accuracy: np.ndarray, fit, colour: str, label: str):
    """Mean accuracy over seeds with its range, and the fit dashed out to 3x the photos."""
    mean = np.nanmean(accuracy, axis=1) if accuracy.ndim == 2 else accuracy
    low, high = (np.nanmin(accuracy, axis=1), np.nanmax(accuracy, axis=1)) \
        if accuracy.ndim == 2 else (mean, mean)
    spread = [np.maximum(mean - low, 0), np.maximum(high - mean, 0)]  # rounding: never < 0
    ax.errorbar(photos, mean, yerr=spread, fmt="o-", color=colour,
                markersize=4, capsize=2, linewidth=1, label=label)
    if fit is not None and photos.max() > 0:
        x = np.geomspace(max(photos.min(), 1), photos.max() * 3, 50)
        ax.plot(x, 1 - fit.error(x), "--", color=colour, linewidth=1)


def prediction(image: np.ndarray, top_k: Sequence[dict], title: str = "") -> Figure:
    """A photo beside bars of its most likely classes and their probabilities."""
    fig = new_figure(8, 3.2)
    photo, bars = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.4]})
    photo.imshow(image)
    photo.axis("off")
    if title:
        photo.set_title(_short(title, 40), fontsize=9)
    shown_names = [_short(t["label"], 28) for t in top_k][::-1]
    values = [t["probability"] for t in top_k][::-1]
    bars.barh(shown_names, values, color=["tab:blue"] * (len(values) - 1) + ["tab:green"])
    bars.set_xlim(0, 1)
    bars.set_xlabel("probability")
    for y, v in enumerate(values):
        bars.text(min(v + 0.02, 0.85), y, f"{v:.1%}", va="center", fontsize=9)
    return fig


CURVES_DRAWN = 10  # labels whose precision-recall curve is drawn in colour, named (C0-C9)


def precision_recall(curves: Sequence[tuple[np.ndarray, np.ndarray] | None],
                     names: Sequence[str], average_precisions: Sequence[float],
                     operating_points: Sequence[tuple[float | None, float | None]],
                     drawn: int = CURVES_DRAWN) -> Figure:
    """Each label's precision against its recall over every threshold, beside the average
    precision of every label.

    `curves` holds a label's (precision, recall) points from its highest threshold down
    (`task.precision_recall_curve`), or None for a label no photo has; `operating_points`
    its (precision, recall) at the model's threshold, marked with a dot (precision None:
    no photo is given the label there). Up to `drawn` labels every curve is drawn in colour
    and named; past it the `drawn` labels of lowest average precision are, over the others
    in light grey, which is what stays readable at 120 labels. On the right, every label's
    average precision, lowest first (named up to 30 labels), the drawn ones in colour.
    """
    n = len(names)
    known = [j for j in range(n) if curves[j] is not None]
    worst = sorted(known, key=lambda j: (average_precisions[j], names[j]))
    shown = worst[:drawn]
    fig = new_figure(13, max(5.0, 0.9 + 0.2 * min(n, 30)))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.15, 1]})
    colours = {j: f"C{i % 10}" for i, j in enumerate(shown)}
    for j in known:
        if j in colours:
            continue
        precision, recall = curves[j]
        left.plot(np.r_[0, recall], np.r_[precision[0], precision], drawstyle="steps-pre",
                  color="0.8", linewidth=0.7, zorder=1)
    for j in shown:
        precision, recall = curves[j]
        left.plot(np.r_[0, recall], np.r_[precision[0], precision], drawstyle="steps-pre",
                  color=colours[j], linewidth=1.6, zorder=2,
                  label=f"{_short(names[j], 24)} (AP {average_precisions[j]:.2f})")
        at_precision, at_recall = operating_points[j]
        if at_precision is not None and at_recall is not None:
            left.plot(at_recall, at_precision, "o", color=colours[j], markeredgecolor="black",
                      markersize=7, zorder=3)
    left.set_xlim(-0.02, 1.02)
    left.set_ylim(-0.02, 1.05)
    left.set_xlabel("recall (share of the label's photos given it)")
    left.set_ylabel("precision (share of the photos given it that have it)")
    left.grid(alpha=0.3)
    rest = len(known) - len(shown)
    left.set_title((f"The {len(shown)} labels of lowest average precision; the other {rest} "
                    "in grey" if rest else "Each label")
                   + "\n(dot: at the model's threshold)", fontsize=10)
    if shown:
        left.legend(fontsize=7, loc="lower left")
    order = worst
    values = [average_precisions[j] for j in order]
    bar_colours = [colours.get(j, "0.6") for j in order]
    undefined = n - len(known)
    title = "Average precision of each label, lowest first"
    if undefined:
        title += f"\n({undefined} label{'s' if undefined != 1 else ''} on no photo: undefined)"
    if len(order) <= 30:
        right.barh(range(len(order)), values, color=bar_colours)
        right.set_yticks(range(len(order)), [_short(names[j], 24) for j in order], fontsize=8)
        right.invert_yaxis()
        right.set_xlim(0, 1)
        right.set_xlabel("average precision")
    else:
        right.bar(range(len(order)), values, color=bar_colours, width=1.0)
        right.set_xlim(-0.5, len(order) - 0.5)
        right.set_ylim(0, 1)
        right.set_xlabel(f"the {len(order)} labels, lowest average precision first")
        right.set_ylabel("average precision")
    if values:
        mean = float(np.mean(values))
        line = right.axvline if len(order) <= 30 else right.axhline
        line(mean, color="black", linestyle="--", linewidth=1, label=f"mean {mean:.3f}")
        right.legend(fontsize=8, loc="lower right")
    right.set_title(title, fontsize=10)
    return fig


LABEL_ERRORS_SHOWN = 30  # labels in the errors-per-label figure; more rows blur together


def label_errors(names: Sequence[str], found: Sequence[int], missed: Sequence[int],
                 wrongly_given: Sequence[int], shown: int = LABEL_ERRORS_SHOWN) -> Figure:
    """A bar per label (the `shown` with most errors, most first): its photos found (given
    the label they have), missed (not given it), and wrongly given it (without having it):
    a multi-label model's confusion matrix per label, less the photos rightly left without."""
    errors = np.asarray(missed) + np.asarray(wrongly_given)
    order = sorted(range(len(names)), key=lambda j: (-errors[j], -missed[j], names[j]))
    order = [j for j in order if errors[j]][:shown]
    if not order:
        return message("No label missed or wrongly given.")
    fig = new_figure(9, max(3.0, 0.9 + 0.28 * len(order)))
    ax = fig.subplots()
    y = np.arange(len(order))
    parts = (("missed", [missed[j] for j in order], "tab:orange"),
             ("wrongly given", [wrongly_given[j] for j in order], "tab:red"),
             ("found", [found[j] for j in order], "tab:blue"))
    left = np.zeros(len(order))
    for label, values, colour in parts:
        ax.barh(y, values, left=left, color=colour, label=label,
                alpha=0.35 if label == "found" else 1.0)
        left += values
    ax.set_yticks(y, [_short(names[j], 28) for j in order], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("photos")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    # Above the bars, where it covers none of them.
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3,
              frameon=False)
    more = sum(1 for e in errors if e) - len(order)
    fig.suptitle("Errors per label" + (f": the {len(order)} with most ({more} more with "
                                      "errors in per_label.csv)" if more > 0 else ""),
                 fontsize=10)
    return fig


# Labels drawn in a multi-label prediction's figure: every label of most models; past this,
# the labels over their thresholds and the most likely others (the title says how many are
# left out), so that the bars stay legible.
PREDICTION_LABELS_SHOWN = 40


def multi_label_prediction(image: np.ndarray, probabilities: Sequence[dict],
                           title: str = "") -> Figure:
    """A photo beside a multi-label prediction: a bar per label (`probabilities`, most
    likely first, each with its "threshold"), green where it reaches its threshold, a tick
    at each threshold; the predicted set above the bars."""
    chosen = [t for t in probabilities if t["probability"] >= t["threshold"]]
    others = [t for t in probabilities if t["probability"] < t["threshold"]]
    shown = (chosen + others)[:max(PREDICTION_LABELS_SHOWN, len(chosen))]
    shown.sort(key=lambda t: -t["probability"])
    left_out = len(probabilities) - len(shown)
    fig = new_figure(8, max(3.2, 1.0 + 0.24 * len(shown)))
    photo, bars = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.4]})
    photo.imshow(image)
    photo.axis("off")
    if title:
        photo.set_title(_short(title, 40), fontsize=9)
    shown = shown[::-1]  # the most likely at the top
    y = np.arange(len(shown))
    values = [t["probability"] for t in shown]
    over = [t["probability"] >= t["threshold"] for t in shown]
    bars.barh(y, values, color=["tab:green" if o else "tab:gray" for o in over])
    bars.set_yticks(y, [_short(t["label"], 28) for t in shown])
    # Each label's threshold: a black tick across its bar.
    bars.scatter([t["threshold"] for t in shown], y, marker="|", s=260, color="black",
                 linewidths=1.5, zorder=3, label="threshold")
    bars.set_xlim(0, 1)
    bars.set_ylim(-0.6, len(shown) - 0.4)
    bars.set_xlabel("probability (tick: the label's threshold)")
    for row, v in zip(y, values):
        bars.text(min(v + 0.02, 0.85), row, f"{v:.1%}", va="center", fontsize=8)
    names = ("predicted: " + ", ".join(_cut(t["label"], 28) for t in chosen) if chosen
             else "no label over its threshold")
    bars.set_title(_label(_cut(names, 80)) + (f" ({left_out} less likely labels not drawn)"
                                              if left_out else ""), fontsize=9)
    return fig


RUN_CURVES = 12  # runs drawn on one figure; more lines and legend entries blur together


def run_curves(runs: Sequence[tuple[str, Sequence]], total: int | None = None) -> Figure:
    """Each run's validation accuracy (left) and loss (right) per epoch, one colour per
    run, named in the legend; epochs with the body frozen are hollow markers, unfrozen ones
    filled. `runs` is (name, epochs) pairs, the epochs `run_folder.EpochRow`s; `total`, the
    runs there were, when `runs` is a part of them (the title says so)."""
    fig = new_figure(12, 4.8)
    accuracy, loss = fig.subplots(1, 2)
    colours = [f"C{i}" for i in range(10)]
    for i, (name, epochs) in enumerate(runs):
        colour, style = colours[i % 10], "-" if i < 10 else "--"  # 12 lines, 12 looks
        label = _short(name, 32)
        for ax, values in ((accuracy, [e.accuracy for e in epochs]),
                           (loss, [e.valid_loss for e in epochs])):
            x = [e.epoch for e in epochs]
            ax.plot(x, values, style, color=colour, linewidth=1.2,
                    label=label if ax is accuracy else None)
            for frozen in (True, False):
                points = [(e.epoch, v) for e, v in zip(epochs, values)
                          if (e.stage == "frozen") == frozen]
                if points:
                    ax.plot(*zip(*points), "o", color=colour, markersize=5,
                            markerfacecolor="white" if frozen else colour)
    for ax, name in ((accuracy, "validation accuracy"), (loss, "validation loss")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    shown = len(runs)
    fig.suptitle((f"The {shown} newest of {total} runs" if total and total > shown
                  else f"{shown} run{'s' if shown != 1 else ''}")
                 + " (hollow markers: epochs with the body frozen)", fontsize=11)
    if runs:
        accuracy.legend(fontsize=7, loc="best", ncol=1 if shown <= 6 else 2)
    return fig


def message(text: str) -> Figure:
    """A small figure that only says something (where there is nothing to draw)."""
    fig = new_figure(5, 2)
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.5, _label(text), ha="center", va="center")
    return fig


def new_figure(width: float, height: float, dpi: int = 100) -> Figure:
    """A figure of this size in inches, shown inline if it ends a notebook cell."""
    _show_figures_inline()
    return Figure(figsize=(width, height), dpi=dpi, layout="tight")


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    _draw(fig, buffer)
    return buffer.getvalue()


SAVED_FORMATS = ("png", "svg", "pdf")


def save(fig: Figure, path: str | Path, format: str = "png") -> Path:
    """Write the figure as a PNG (or `format`: svg, pdf), atomically (a crash never leaves
    half a file)."""
    path = Path(path)
    fileio.atomic_write(path, lambda tmp: _draw(fig, tmp, format))
    return path


def _draw(fig: Figure, target, format: str = "png") -> None:
    # A class named with an emoji or a script the font lacks is drawn with a box for each
    # such character; matplotlib's warning about it, once per character, would tell the
    # user nothing they can act on.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from",
                                category=UserWarning)
        fig.savefig(target, format=format)


def _show_figures_inline() -> None:
    """In Jupyter, show a Figure that ends a cell as a PNG, as pyplot's inline backend does.

    Figures made without pyplot have no display of their own until matplotlib's inline
    backend is loaded, which happens only when pyplot is imported; registering the same
    formatter here makes `evaluation.plot_confusion_matrix()` show without that import.
    """
    if not in_notebook():
        return
    from IPython import get_ipython

    formatter = get_ipython().display_formatter.formatters["image/png"]
    try:
        formatter.lookup_by_type(Figure)
    except KeyError:
        formatter.for_type(Figure, png_bytes)


def _short(text: str, limit: int = 24) -> str:
    """A name as a figure shows it (`_label`), cut to `limit` characters."""
    return _label(_cut(text, limit))


def _cut(text: str, limit: int) -> str:
    text = shown_name(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _label(text: str) -> str:
    """Text from names drawn as it is: a byte that is not UTF-8 as \\xe9 (matplotlib cannot
    draw a lone surrogate), and $ as a dollar sign (two of them would start mathtext, which
    fails on most names)."""
    return shown_name(text).replace("$", r"\$")
