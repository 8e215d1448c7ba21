"""The PNG figures: confusion matrices, top losses, and grids of photos.

All drawn with matplotlib's Agg backend (no screen needed). Sizes grow with the number of
classes so that labels stay legible; past 30 classes the full confusion matrix shows rates
without numbers, and the most-confused heatmap carries the detail.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ANNOTATE_UP_TO = 30  # classes; beyond this, numbers in cells would be unreadable


def confusion_matrix(matrix: np.ndarray, names: Sequence[str], path: Path) -> Path:
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
    font = 5 if many else 9
    fig, ax = plt.subplots(figsize=(side + 2.5, side + 1.5))
    mistakes = np.ma.masked_where(eye | (rates == 0), rates)
    worst = float(mistakes.max()) if mistakes.count() else 1.0
    ax.imshow(np.ma.masked_where(~eye, rates), cmap="Blues", vmin=0, vmax=1)
    red = ax.imshow(mistakes, cmap="Reds", vmin=0, vmax=worst)
    labels = [_short(s) for s in names]
    ax.set_xticks(range(n), labels, rotation=90, fontsize=font)
    ax.set_yticks(range(n), labels, fontsize=font)
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
    return _save(fig, path, dpi=150 if many else 100)


def most_confused_heatmap(matrix: np.ndarray, names: Sequence[str], pairs: Sequence,
                          path: Path) -> Path:
    """The confusion sub-matrix of the classes in the most confused pairs, with counts."""
    index = {name: i for i, name in enumerate(names)}
    chosen: list[int] = []
    for pair in pairs:
        for name in (pair.actual, pair.predicted):
            if index[name] not in chosen:
                chosen.append(index[name])
    if not chosen:
        fig, ax = plt.subplots(figsize=(5, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "No mistakes on the validation photos.", ha="center", va="center")
        return _save(fig, path)
    sub = matrix[np.ix_(chosen, chosen)]
    off = sub.copy()
    np.fill_diagonal(off, 0)
    k = len(chosen)
    side = max(4.5, 1.8 + 0.55 * k)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    im = ax.imshow(off, cmap="Reds", vmin=0, vmax=max(int(off.max()), 1))
    labels = [_short(names[i], 28) for i in chosen]
    ax.set_xticks(range(k), labels, rotation=60, ha="right", fontsize=9)
    ax.set_yticks(range(k), labels, fontsize=9)
    for a in range(k):
        for p in range(k):
            value = sub[a, p]
            if value:
                diagonal = a == p
                ax.text(p, a, str(value), ha="center", va="center", fontsize=9,
                        color="gray" if diagonal else
                        ("white" if off[a, p] > off.max() / 2 else "black"),
                        style="italic" if diagonal else "normal")
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title("Most confused classes (grey: correct)")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="mistakes")
    return _save(fig, path)


def top_losses(images: Sequence[np.ndarray], captions: Sequence[tuple], path: Path) -> Path:
    """Photos titled predicted / actual / loss / probability, as fastai's plot_top_losses."""
    titles = [f"{_short(p, 18)} / {_short(a, 18)}\n{loss:.2f} / {prob:.2f}"
              for p, a, loss, prob in captions]
    return photo_grid(images, titles, path, "predicted / actual / loss / probability")


def photo_grid(images: Sequence[np.ndarray], titles: Sequence[str], path: Path,
               suptitle: str = "", columns: int = 4) -> Path:
    """A grid of uint8 photos with a title under each."""
    n = max(len(images), 1)
    columns = min(columns, n)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.7 * columns, 3.0 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(image)
        ax.set_title(title, fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    return _save(fig, path)


def class_samples(samples: Sequence[tuple[str, Sequence[np.ndarray]]], path: Path) -> Path:
    """One row per class: its name, then a few of its photos."""
    rows = max(len(samples), 1)
    columns = max((len(imgs) for _, imgs in samples), default=1)
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns + 1.6, 1.6 * rows),
                             squeeze=False)
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
    return _save(fig, path)


def _short(text: str, limit: int = 24) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _save(fig, path: Path, dpi: int = 100) -> Path:
    from clearclass import fileio

    fig.tight_layout()
    path = Path(path)
    fileio.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    plt.close(fig)
    return path
