"""A look at a dataset before training: counts, photo sizes, unreadable files, samples.

`explore(DATA)` decodes every photo once (that is how truncated files are found) and
returns an `Exploration`: per-class counts, size statistics, unreadable files, and figures
of sample photos per class and of what batch augmentation does. With `out` it writes them
(`samples.png`, `augmented.png`, `batch.png`, `unreadable.csv`); in a notebook it shows
itself under the cell. `show_batch(DATA)` draws a batch of augmented training photos with
their labels, as fastai's `dls.show_batch()`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rich.table import Table
from torch.utils.data import DataLoader, Dataset

from clearclass import fileio
from clearclass.data.augment import augment_settings, batch_augment
from clearclass.data.decode import (
    UnreadableImage,
    crop_or_pad,
    inspect_image,
    open_rgb,
    resize_to_fit,
)
from clearclass.data.loader import keep_as_is
from clearclass.data.sources import Photo, PhotoSet, find_photos
from clearclass.errors import DataError, check_count, check_path
from clearclass.parallel import check_process_count, default_workers
from clearclass.progress import bar, say, show
from clearclass.training.config import EXPLORE_SETTINGS, TrainConfig, make_config

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SAMPLES_PER_CLASS = 6
CLASSES_PER_PAGE = 20
THUMBNAIL = 160
# A class with more than this many times the training photos of another is warned about:
# the network learns the large class at the small one's expense (issue 23).
IMBALANCE_RATIO = 3


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

    def counts(self) -> dict[str, tuple[int, int]]:
        """Readable photos per class (display name), as (train, valid)."""
        bad = {p for p, _ in self.unreadable}
        names = dict(zip(self.photo_set.class_ids, self.photo_set.display_names))
        counts = {names[c]: [0, 0] for c in self.photo_set.class_ids}
        for p in self.photo_set.photos:
            if p.path not in bad:
                counts[names[p.class_id]][p.is_valid] += 1
        return {name: (train, valid) for name, (train, valid) in counts.items()}

    def imbalance(self) -> str | None:
        """A warning when the largest class has more than IMBALANCE_RATIO times the readable
        training photos of the smallest (which has some); None otherwise."""
        train = {name: counts[0] for name, counts in self.counts().items() if counts[0]}
        if len(train) < 2:
            return None
        largest, smallest = max(train, key=train.get), min(train, key=train.get)
        if train[largest] <= IMBALANCE_RATIO * train[smallest]:
            return None
        return (f"The classes are imbalanced: {largest} has {train[largest]} training photos, "
                f"{train[largest] / train[smallest]:.1f} times the {train[smallest]} of "
                f"{smallest}. A model learns the large classes at the small ones' expense; "
                "add photos of the small classes where you can, or train with --balance "
                "weights (a loss weighted by class) or --balance sampler (small classes drawn "
                "more often).")

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
        names = dict(zip(self.photo_set.class_ids, self.photo_set.display_names))
        return _augmented_grid(self._readable_training_photos(), names, self.config, photos,
                               versions)

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
        if self._readable_training_photos():  # both figures show training photos
            if self.config.batch_augment != "none":
                written.append(figures.save(self.plot_augmented(), out / "augmented.png"))
            written.append(figures.save(self.show_batch(), out / "batch.png"))
        self.figures = written
        return written

    def _readable_training_photos(self) -> list[Photo]:
        return [p for p in self.photo_set.train if p.path in self.sizes]

    def __repr__(self) -> str:
        photo_set = self.photo_set
        lines = [f"{len(photo_set.class_ids)} classes ({photo_set.layout}); "
                 f"{len(self.sizes)} readable photos, {len(self.unreadable)} unreadable."]
        lines += [f"  {name}: {train} training, {valid} validation"
                  for name, (train, valid) in self.counts().items()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from clearclass import figures, pages

        stats = "; ".join(f"{k} {a} / {b} / {c}" for k, (a, b, c) in self.size_stats().items())
        return pages.render(
            "exploration.html", classes=len(self.photo_set.class_ids),
            layout=self.photo_set.layout, readable=len(self.sizes), counts=self.counts(),
            sizes=stats, unreadable=self.unreadable, imbalance=self.imbalance(),
            samples=pages.png_uri(figures.png_bytes(self.plot_samples())))


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

    `data` and `settings` are those of `train` that concern the photos
    (`validation_fraction`, `seed`, `item_resize`, `resize_method`, `batch_augment`,
    `augment_strength`, `workers`). With `out`, the figures and unreadable.csv are written
    there too.

    Example:
        found = clearclass.explore("photos/", out="runs/explore")
        print(found.size_stats())
    """
    if out is not None:
        check_path("out", out, "a folder")
    config = make_config(data, settings, allowed=EXPLORE_SETTINGS)
    photo_set = find_photos(config.data, config.validation_fraction, config.seed)
    rng = random.Random(config.seed)
    by_class: dict[str, list[int]] = {c: [] for c in photo_set.class_ids}
    for i, p in enumerate(photo_set.photos):
        by_class[p.class_id].append(i)
    # A few more than shown per class, in case some turn out unreadable.
    wanted = {i for members in by_class.values()
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
    samples = [(names[c], [thumbs[i] for i in sorted(by_class[c]) if i in thumbs]
                [:SAMPLES_PER_CLASS]) for c in photo_set.class_ids]
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
    photo_set = find_photos(config.data, config.validation_fraction, config.seed)
    return _batch_figure(photo_set.train, photo_set, config, n)


def print_report(result: Exploration) -> None:
    """The exploration as the command line shows it: a table of counts, then notes."""
    photo_set, item_resize = result.photo_set, result.config.item_resize
    names = dict(zip(photo_set.class_ids, photo_set.display_names))
    unreadable = {p for p, _ in result.unreadable}
    table = Table(title=f"{len(photo_set.class_ids)} classes ({photo_set.layout})")
    for column in ("class", "folder / id", "train", "valid", "unreadable"):
        table.add_column(column, justify="left" if column in ("class", "folder / id")
                         else "right", overflow="fold")
    bad = {c: 0 for c in photo_set.class_ids}
    for p in photo_set.photos:
        if p.path in unreadable:
            bad[p.class_id] += 1
    total_train = total_valid = 0
    for cid, (train, valid) in photo_set.counts().items():
        total_train, total_valid = total_train + train, total_valid + valid
        table.add_row(fileio.shown_name(names[cid]), fileio.shown_name(cid), str(train),
                      str(valid), str(bad[cid] or ""))
    table.add_row("total", "", str(total_train), str(total_valid), str(len(unreadable) or ""),
                  style="bold")
    show(table)
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
                              [names[p.class_id] for p in picked], columns=columns)


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
        titles.append(f"{names[photo.class_id]} (as loaded)")
        for r in range(versions):
            images.append(augmented[k * versions + r])
            titles.append("augmented")
    return figures.photo_grid(images, titles, "batch augmentation", columns=versions + 1)
