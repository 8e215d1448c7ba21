"""A look at a dataset before training: counts, photo sizes, unreadable files, samples.

`explore(DATA)` decodes every photo once (that is how truncated files are found) and
returns an `Exploration`: per-class counts, size statistics, unreadable files, and figures
of sample photos per class and of what batch augmentation does. With `out` it writes them
(`samples.png`, `augmented.png`, `batch.png`, `unreadable.csv`); in a notebook it shows
itself under the cell. `show_batch(DATA)` draws a batch of augmented training photos with
their labels, as fastai's `dls.show_batch()`.

A multi-label CSV (several labels per photo, or none) is explored label by label: photos
with each label, how many labels the photos have, which labels occur together (the pairs
on the most photos, and `cooccurrence.png`, a heatmap of the labels on the most photos),
samples of each label (and of the photos with none), and titles that show each photo's set.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rich.table import Table
from torch.utils.data import DataLoader, Dataset

from clearclass import fileio
from clearclass.data.augment import augment_settings, batch_augment
from clearclass.data.checks import imbalance_warning, label_imbalance_warning
from clearclass.data.decode import (
    UnreadableImage,
    crop_or_pad,
    inspect_image,
    open_rgb,
    resize_to_fit,
)
from clearclass.data.loader import keep_as_is
from clearclass.data.sources import Photo, PhotoSet, find_photos, label_text
from clearclass.errors import DataError, check_count, check_path
from clearclass.parallel import check_process_count, default_workers
from clearclass.progress import bar, say, show
from clearclass.training.config import EXPLORE_SETTINGS, TrainConfig, make_config

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SAMPLES_PER_CLASS = 6
CLASSES_PER_PAGE = 20
THUMBNAIL = 160
TOP_PAIRS = 10  # label pairs listed by the report; cooccurrence.png draws more
NO_LABEL = "(no label)"  # the row of samples of a multi-label set's photos without one


@dataclass(frozen=True)
class LabelPair:
    """Two labels (display names) of a multi-label set and the readable photos with both;
    `share` is those photos over the photos with the rarer of the two."""

    first: str
    second: str
    photos: int
    share: float

    def __str__(self) -> str:
        return (f"{self.first} + {self.second}: {self.photos} photos ({self.share:.0%} of "
                f"those with {self.second})")


@dataclass(repr=False)
class Exploration:
    """What `explore` found.

    Example:
        found = clearclass.explore("photos/")
        print(found.counts())
        found.plot_samples()  # a matplotlib figure; shown under a notebook cell
    """

    photo_set: PhotoSet
    sizes: dict[Path, tuple[int, int]]  # (width, height) of each readable photo
    unreadable: list[tuple[Path, str]]
    config: TrainConfig  # the photo settings it was explored with
    samples: list[tuple[str, list[np.ndarray]]] = field(default_factory=list)  # per class
    figures: list[Path] = field(default_factory=list)  # files written by `save`

    @property
    def is_multi_label(self) -> bool:
        """Whether each photo has a set of labels (maybe none) rather than one class."""
        return self.photo_set.task == "multi"

    def counts(self) -> dict[str, tuple[int, int]]:
        """Readable photos per class (display name), as (train, valid); multi-label: the
        readable photos with each label."""
        names = self._names()
        counts = {names[c]: [0, 0] for c in self.photo_set.class_ids}
        for p in self._readable():
            for c in p.label_set:
                counts[names[c]][p.is_valid] += 1
        return {name: (train, valid) for name, (train, valid) in counts.items()}

    def imbalance(self) -> str | None:
        """A warning when the largest class has more than IMBALANCE_RATIO times the readable
        training photos of the smallest (which has some); multi-label: the label on the
        most training photos against the rarest (`label_imbalance_warning`). None
        otherwise."""
        train = {name: counts[0] for name, counts in self.counts().items()}
        if self.is_multi_label:
            return label_imbalance_warning(
                train, sum(1 for p in self._readable() if not p.is_valid))
        return imbalance_warning(train)

    def labels_per_photo(self) -> dict[int, int]:
        """How many readable photos have 0, 1, 2, ... labels (one each, for one class per
        photo), from none to the most any photo has."""
        found = Counter(len(p.label_set) for p in self._readable())
        return {n: found[n] for n in range(max(found, default=0) + 1)}

    def cooccurrence(self) -> np.ndarray:
        """Readable photos with both labels, for every pair of labels (labels x labels, in
        `photo_set.class_ids`' order); the diagonal is the photos with each label."""
        targets = self.photo_set.targets(self._readable())
        if not self.is_multi_label:  # one class per photo: no two on one photo
            return np.diag(np.bincount(targets, minlength=len(self.photo_set.class_ids)))
        targets = targets.astype(np.int64)  # kept as uint8 rows: a count would wrap at 256
        return targets.T @ targets

    def top_pairs(self, n: int = TOP_PAIRS) -> list[LabelPair]:
        """The `n` pairs of labels on the most readable photos together (none share a
        photo: an empty list)."""
        matrix, names = self.cooccurrence(), self.photo_set.display_names
        pairs = [(int(matrix[a, b]), a, b) for a in range(len(names))
                 for b in range(a + 1, len(names)) if matrix[a, b]]
        pairs.sort(key=lambda pair: (-pair[0], pair[1], pair[2]))
        found = []
        for both, a, b in pairs[:n]:
            first, second = (a, b) if matrix[a, a] >= matrix[b, b] else (b, a)
            found.append(LabelPair(names[first], names[second], both,
                                   both / max(int(matrix[second, second]), 1)))
        return found

    def plot_cooccurrence(self) -> Figure:
        """The heatmap of which labels occur together: photos with both of each pair, for
        the 30 labels on the most photos (`figures.label_cooccurrence`)."""
        from clearclass import figures

        return figures.label_cooccurrence(self.cooccurrence(), self.photo_set.display_names)

    def size_stats(self) -> dict[str, tuple[int, int, int]]:
        """(min, median, max) of width, height and short side, in pixels."""
        if not self.sizes:
            return {}
        w = np.array([s[0] for s in self.sizes.values()])
        h = np.array([s[1] for s in self.sizes.values()])
        stats = {}
        for name, values in (("width", w), ("height", h), ("short side", np.minimum(w, h))):
            stats[name] = (int(values.min()), int(np.median(values)), int(values.max()))
        return stats

    def plot_samples(self, page: int = 1) -> Figure:
        """A row of sample photos per class, CLASSES_PER_PAGE classes a page."""
        from clearclass import figures

        check_count("page", page)
        start = (page - 1) * CLASSES_PER_PAGE
        return figures.class_samples(self.samples[start : start + CLASSES_PER_PAGE])

    def plot_augmented(self, photos: int = 4, versions: int = 4) -> Figure:
        """A few training photos as loaded, each followed by augmented versions of it."""
        check_count("photos", photos)
        check_count("versions", versions, least=0)
        return _augmented_grid(self._readable_training_photos(), self._names(), self.config,
                               photos, versions)

    def show_batch(self, n: int = 9) -> Figure:
        """A batch of augmented training photos with their labels (see `show_batch`)."""
        return _batch_figure(self._readable_training_photos(), self.photo_set, self.config, n)

    def save(self, out: str | Path) -> list[Path]:
        """Write unreadable.csv and the figures into `out`; returns the figures' paths."""
        from clearclass import figures

        check_path("out", out, "a folder")
        out = fileio.output_folder(out)
        fileio.write_csv(out / "unreadable.csv", ("path", "reason"),
                         [(str(p), r) for p, r in self.unreadable])
        written = []
        pages = max(1, -(-len(self.samples) // CLASSES_PER_PAGE))
        for page in range(1, pages + 1):
            suffix = "" if page == 1 else f"-{page}"
            written.append(figures.save(self.plot_samples(page), out / f"samples{suffix}.png"))
        if self.is_multi_label:
            written.append(figures.save(self.plot_cooccurrence(), out / "cooccurrence.png"))
        if self._readable_training_photos():  # both figures show training photos
            if self.config.batch_augment != "none":
                written.append(figures.save(self.plot_augmented(), out / "augmented.png"))
            written.append(figures.save(self.show_batch(), out / "batch.png"))
        self.figures = written
        return written

    def _readable_training_photos(self) -> list[Photo]:
        return [p for p in self.photo_set.train if p.path in self.sizes]

    def _readable(self) -> list[Photo]:
        return [p for p in self.photo_set.photos if p.path in self.sizes]

    def _names(self) -> dict[str, str]:
        return dict(zip(self.photo_set.class_ids, self.photo_set.display_names))

    def __repr__(self) -> str:
        photo_set = self.photo_set
        lines = [f"{_kinds(photo_set)} ({photo_set.layout}); "
                 f"{len(self.sizes)} readable photos, {len(self.unreadable)} unreadable."]
        with_ = " with it" if self.is_multi_label else ""
        lines += [f"  {name}: {train} training, {valid} validation{with_}"
                  for name, (train, valid) in self.counts().items()]
        if self.is_multi_label:
            lines.append("Labels per photo: " + _per_photo_text(self.labels_per_photo()))
            lines += ["Together most often:", *(f"  {pair}" for pair in self.top_pairs())]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from clearclass import figures, pages

        stats = "; ".join(f"{k} {a} / {b} / {c}" for k, (a, b, c) in self.size_stats().items())
        multi = self.is_multi_label
        return pages.render(
            "exploration.html", kinds=_kinds(self.photo_set), multi=multi,
            layout=self.photo_set.layout, readable=len(self.sizes), counts=self.counts(),
            sizes=stats, unreadable=self.unreadable, imbalance=self.imbalance(),
            per_photo=self.labels_per_photo() if multi else {},
            pairs=[str(pair) for pair in self.top_pairs()] if multi else [],
            cooccurrence=(pages.png_uri(figures.png_bytes(self.plot_cooccurrence()))
                          if multi else ""),
            samples=pages.png_uri(figures.png_bytes(self.plot_samples())))


def _kinds(photo_set: PhotoSet) -> str:
    """"3 classes", or "3 labels" for a multi-label set."""
    noun = "labels" if photo_set.task == "multi" else "classes"
    return f"{len(photo_set.class_ids)} {noun}"


def _per_photo_text(per_photo: dict[int, int]) -> str:
    """`labels_per_photo` in words: "6 photos with 0 labels, 18 with 1, 18 with 2"."""
    return ", ".join(f"{count}{' photos' if i == 0 else ''} with {n}"
                     f"{' labels' if i == 0 else ''}"
                     for i, (n, count) in enumerate(per_photo.items()))


class _Inspect(Dataset):
    def __init__(self, paths: list[Path], thumbs: set[int]):
        self.paths, self.thumbs = paths, thumbs

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            width, height, thumb = inspect_image(self.paths[i], THUMBNAIL)
            return i, (width, height), thumb if i in self.thumbs else None, ""
        except UnreadableImage as e:
            return i, None, None, str(e)


def explore(data: str | Path | TrainConfig, out: str | Path | None = None,
            **settings: Any) -> Exploration:
    """Look at labelled photos before training: counts, sizes, unreadable files, samples.

    `data` and `settings` are those of `train` that concern the photos (`task`,
    `label_delimiter`, `validation_fraction`, `seed`, `item_resize`, `resize_method`,
    `batch_augment`, `augment_strength`, `workers`). With `out`, the figures and
    unreadable.csv are written there too (and cooccurrence.png for a multi-label CSV).

    Example:
        found = clearclass.explore("photos/", out="runs/explore")
        print(found.size_stats())
    """
    if out is not None:
        check_path("out", out, "a folder")
    config = make_config(data, settings, allowed=EXPLORE_SETTINGS)
    photo_set = find_photos(config.data, config.validation_fraction, config.seed,
                            config.task, config.label_delimiter)
    rng = random.Random(config.seed)
    # Samples of each class; of a multi-label set, of each label (a photo with several
    # labels may show under each) and of the photos without one.
    by_class: dict[str, list[int]] = {c: [] for c in photo_set.class_ids}
    unlabelled: list[int] = []
    for i, p in enumerate(photo_set.photos):
        for c in p.label_set:
            by_class[c].append(i)
        if not p.label_set:
            unlabelled.append(i)
    groups = list(by_class.values()) + [unlabelled]
    # A few more than shown per class, in case some turn out unreadable.
    wanted = {i for members in groups
              for i in rng.sample(members, min(len(members), SAMPLES_PER_CLASS + 2))}

    paths = [p.path for p in photo_set.photos]
    check_process_count("workers", config.workers, "processes that decode photos")
    workers = default_workers() if config.workers is None else config.workers
    loader = DataLoader(_Inspect(paths, wanted), batch_size=None, collate_fn=keep_as_is,
                        num_workers=workers if len(paths) >= 64 else 0)
    sizes, thumbs, unreadable = {}, {}, []
    with bar("inspecting photos", len(paths)) as progress:
        for i, size, thumb, reason in loader:
            if size is None:
                unreadable.append((paths[i], reason))
            else:
                sizes[paths[i]] = size
                if thumb is not None:
                    thumbs[i] = thumb
            progress.advance()
    names = dict(zip(photo_set.class_ids, photo_set.display_names))
    rows = [(names[c], by_class[c]) for c in photo_set.class_ids]
    if unlabelled:
        rows.append((NO_LABEL, unlabelled))
    samples = [(name, [thumbs[i] for i in sorted(members) if i in thumbs][:SAMPLES_PER_CLASS])
               for name, members in rows]
    result = Exploration(photo_set, sizes, sorted(unreadable), config, samples)
    if out is not None:
        result.save(out)
    return result


def show_batch(data: str | Path | TrainConfig, n: int = 9, **settings: Any) -> Figure:
    """A batch of `n` training photos as training sees them, augmented, with their labels.

    As fastai's `dls.show_batch()`: photos drawn at random (from `seed`), resized and cut
    as `item_resize` and `resize_method` say, then augmented as `batch_augment` and
    `augment_strength` say. Takes the same photo settings as `explore`.

    Example:
        figure = clearclass.show_batch("photos/", n=9)
        figure.savefig("batch.png")
    """
    check_count("n", n)
    config = make_config(data, settings, allowed=EXPLORE_SETTINGS)
    photo_set = find_photos(config.data, config.validation_fraction, config.seed,
                            config.task, config.label_delimiter)
    return _batch_figure(photo_set.train, photo_set, config, n)


def print_report(result: Exploration) -> None:
    """The exploration as the command line shows it: a table of counts, then notes."""
    photo_set, item_resize = result.photo_set, result.config.item_resize
    multi = result.is_multi_label
    names = dict(zip(photo_set.class_ids, photo_set.display_names))
    unreadable = {p for p, _ in result.unreadable}
    table = Table(title=f"{_kinds(photo_set)} ({photo_set.layout})"
                  + (": photos with each label" if multi else ""))
    first, second = ("label", "id") if multi else ("class", "folder / id")
    for column in (first, second, "train", "valid", "unreadable"):
        table.add_column(column, justify="left" if column in (first, second)
                         else "right", overflow="fold")
    bad = {c: 0 for c in photo_set.class_ids}
    for p in photo_set.photos:
        if p.path in unreadable:
            for c in p.label_set:
                bad[c] += 1
    total_train = total_valid = 0
    for cid, (train, valid) in photo_set.counts().items():
        total_train, total_valid = total_train + train, total_valid + valid
        table.add_row(fileio.shown_name(names[cid]), fileio.shown_name(cid), str(train),
                      str(valid), str(bad[cid] or ""))
    if multi:  # a photo counts under each of its labels: the photos, not the sum
        total_train, total_valid = len(photo_set.train), len(photo_set.valid)
    table.add_row("photos" if multi else "total", "", str(total_train), str(total_valid),
                  str(len(unreadable) or ""), style="bold")
    show(table)
    if multi:
        say("Labels per photo (readable photos): "
            + _per_photo_text(result.labels_per_photo()))
        pairs = result.top_pairs()
        say("Labels that occur together most often: "
            + ("; ".join(fileio.shown_name(str(pair)) for pair in pairs) if pairs
               else "none: no photo has two labels."))
    stats = result.size_stats()
    if stats:
        say("Photo sizes (min / median / max, pixels): " + "; ".join(
            f"{k} {a} / {b} / {c}" for k, (a, b, c) in stats.items()))
        small = sum(1 for w, h in result.sizes.values() if min(w, h) < item_resize)
        if small:
            say(f"{small} photo(s) have a short side under {item_resize} px and will be "
                "upscaled by --item-resize.")
    for note in photo_set.notes:
        say(note)
    imbalance = result.imbalance()
    if imbalance:
        say(fileio.shown_name(imbalance))
    if result.unreadable:
        say(f"{len(result.unreadable)} unreadable file(s) (training skips them):")
        for path, reason in result.unreadable[:10]:
            say(f"  {path}: {reason}")
        if len(result.unreadable) > 10:
            say(f"  ... and {len(result.unreadable) - 10} more (see unreadable.csv)")
    if result.figures:
        say(f"Figures: {', '.join(str(f) for f in result.figures)}")


def _squares(photos: list[Photo], config: TrainConfig, count: int, rng: random.Random,
             positions: bool) -> tuple[list[Photo], list[np.ndarray]]:
    """Up to `count` photos drawn at random, read and cut to squares as training does
    (at a random position when `positions`, else centred); unreadable ones are passed over."""
    size, method = config.item_resize, config.resize_method
    picked, squares = [], []
    for photo in rng.sample(photos, len(photos)):
        if len(picked) == count:
            break
        try:
            pixels = resize_to_fit(open_rgb(photo.path, size), size, method)
        except UnreadableImage:
            continue
        where = (rng.random(), rng.random()) if positions else (0.5, 0.5)
        picked.append(photo)
        squares.append(crop_or_pad(pixels, size, method, where))
    return picked, squares


def _augment(squares: list[np.ndarray], config: TrainConfig, seed: int) -> np.ndarray:
    """The squares through batch augmentation (unchanged with batch_augment none)."""
    settings = augment_settings(config.batch_augment, config.augment_strength)
    if settings is None:
        return np.stack(squares)
    batch = torch.from_numpy(np.stack(squares)).permute(0, 3, 1, 2)
    augmented = batch_augment(batch, settings, torch.Generator().manual_seed(seed))
    return (augmented * 255).round().byte().permute(0, 2, 3, 1).numpy()


def _batch_figure(photos: list[Photo], photo_set: PhotoSet, config: TrainConfig,
                  n: int) -> Figure:
    from clearclass import figures

    check_count("n", n)
    picked, squares = _squares(photos, config, n, random.Random(config.seed), positions=True)
    if not picked:
        raise DataError(f"No readable training photo in {photo_set.root}.")
    names = dict(zip(photo_set.class_ids, photo_set.display_names))
    columns = min(len(picked), int(np.ceil(np.sqrt(len(picked)))))
    return figures.photo_grid(list(_augment(squares, config, config.seed)),
                              [_title(p, names) for p in picked], columns=columns)


def _title(photo: Photo, names: dict[str, str]) -> str:
    """A photo's class, or (multi-label) its set of labels, by display name."""
    if photo.labels is None:
        return names[photo.class_id]
    return label_text(tuple(names[c] for c in photo.labels))


def _augmented_grid(photos: list[Photo], names: dict[str, str], config: TrainConfig,
                    count: int, versions: int) -> Figure:
    """Each picked photo as the model sees it, then augmented versions of it."""
    from clearclass import figures

    picked, squares = _squares(photos, config, count, random.Random(config.seed),
                               positions=False)
    repeated = [square for square in squares for _ in range(versions)]
    augmented = _augment(repeated, config, config.seed) if repeated else []
    images, titles = [], []
    for k, photo in enumerate(picked):
        images.append(squares[k])
        titles.append(f"{_title(photo, names)} (as loaded)")
        for r in range(versions):
            images.append(augmented[k * versions + r])
            titles.append("augmented")
    return figures.photo_grid(images, titles, "batch augmentation", columns=versions + 1)
