"""A look at a dataset before training: counts, photo sizes, unreadable files, samples.

`explore(DATA)` decodes every photo once (that is how truncated files are found), prints
per-class counts and size statistics, lists unreadable files, and writes a grid of sample
photos per class and a grid showing what batch augmentation does to a few photos.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

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
from clearclass.data.sources import PhotoSet, find_photos
from clearclass.parallel import default_workers
from clearclass.progress import bar, console, say

SAMPLES_PER_CLASS = 6
CLASSES_PER_PAGE = 20
THUMBNAIL = 160


@dataclass
class Exploration:
    """What `explore` found."""

    photo_set: PhotoSet
    sizes: dict[Path, tuple[int, int]]  # (width, height) of each readable photo
    unreadable: list[tuple[Path, str]]
    figures: list[Path] = field(default_factory=list)

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


def explore(
    data: str | Path,
    out: str | Path | None = None,
    valid_pct: float = 0.2,
    seed: int = 42,
    item_resize: int = 224,
    resize_method: str = "crop",
    batch_augment_preset: str = "standard",
    augment_strength: float = 1.0,
    workers: int | None = None,
    quiet: bool = False,
) -> Exploration:
    """Describe the photos under DATA and write sample grids into OUT.

    Example: `clearclass.explore("photos/", out="runs/explore")`.
    """
    photo_set = find_photos(data, valid_pct, seed)
    out_dir = Path(out) if out else Path("runs") / f"explore-{Path(data).stem or 'data'}"
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    by_class: dict[str, list[int]] = {c: [] for c in photo_set.class_ids}
    for i, p in enumerate(photo_set.photos):
        by_class[p.label].append(i)
    # A few more than shown per class, in case some turn out unreadable.
    wanted = {i for members in by_class.values()
              for i in rng.sample(members, min(len(members), SAMPLES_PER_CLASS + 2))}

    paths = [p.path for p in photo_set.photos]
    workers = default_workers() if workers is None else workers
    loader = DataLoader(_Inspect(paths, wanted), batch_size=None, collate_fn=keep_as_is,
                        num_workers=workers if len(paths) >= 64 else 0)
    sizes, thumbs, unreadable = {}, {}, []
    with bar("inspecting photos", len(paths), quiet) as progress:
        for i, size, thumb, reason in loader:
            if size is None:
                unreadable.append((paths[i], reason))
            else:
                sizes[paths[i]] = size
                if thumb is not None:
                    thumbs[i] = thumb
            progress.advance()
    result = Exploration(photo_set, sizes, sorted(unreadable))
    fileio.write_csv(out_dir / "unreadable.csv", ("path", "reason"),
                     [(str(p), r) for p, r in result.unreadable])

    from clearclass import figures

    names = dict(zip(photo_set.class_ids, photo_set.display_names))
    samples = [(names[c], [thumbs[i] for i in sorted(by_class[c]) if i in thumbs]
                [:SAMPLES_PER_CLASS]) for c in photo_set.class_ids]
    for page, start in enumerate(range(0, len(samples), CLASSES_PER_PAGE), start=1):
        suffix = "" if page == 1 else f"-{page}"
        result.figures.append(figures.class_samples(samples[start : start + CLASSES_PER_PAGE],
                                                    out_dir / f"samples{suffix}.png"))
    settings = augment_settings(batch_augment_preset, augment_strength)
    if settings is not None:
        readable = [p for p in photo_set.train if p.path in sizes]
        picks = rng.sample(readable, min(4, len(readable)))
        result.figures.append(_augmented_grid(picks, names, item_resize, resize_method,
                                              settings, seed, out_dir / "augmented.png"))
    if not quiet:
        _print(result, names, item_resize)
        say(f"Figures: {', '.join(str(f) for f in result.figures)}")
    return result


def _augmented_grid(picks, names, size, method, settings, seed, path: Path) -> Path:
    """Each picked photo as the model sees it, then four augmented versions of it."""
    from clearclass import figures

    squares = [crop_or_pad(resize_to_fit(open_rgb(p.path, size), size, method), size, method)
               for p in picks]
    batch = torch.from_numpy(np.stack(squares)).permute(0, 3, 1, 2)
    repeats = 4
    gen = torch.Generator().manual_seed(seed)
    augmented = batch_augment(batch.repeat_interleave(repeats, 0), settings, gen)
    augmented = (augmented * 255).round().byte().permute(0, 2, 3, 1).numpy()
    images, titles = [], []
    for k, photo in enumerate(picks):
        images.append(squares[k])
        titles.append(f"{names[photo.label]} (as loaded)")
        for r in range(repeats):
            images.append(augmented[k * repeats + r])
            titles.append("augmented")
    return figures.photo_grid(images, titles, path, "batch augmentation", columns=repeats + 1)


def _print(result: Exploration, names: dict[str, str], item_resize: int) -> None:
    photo_set = result.photo_set
    unreadable = {p for p, _ in result.unreadable}
    table = Table(title=f"{len(photo_set.class_ids)} classes ({photo_set.layout})")
    for column in ("class", "folder / id", "train", "valid", "unreadable"):
        table.add_column(column, justify="left" if column in ("class", "folder / id")
                         else "right", overflow="fold")
    bad = {c: 0 for c in photo_set.class_ids}
    for p in photo_set.photos:
        if p.path in unreadable:
            bad[p.label] += 1
    total_train = total_valid = 0
    for cid, (train, valid) in photo_set.counts().items():
        total_train, total_valid = total_train + train, total_valid + valid
        table.add_row(names[cid], cid, str(train), str(valid), str(bad[cid] or ""))
    table.add_row("total", "", str(total_train), str(total_valid), str(len(unreadable) or ""),
                  style="bold")
    console.print(table)
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
    if result.unreadable:
        say(f"{len(result.unreadable)} unreadable file(s) (training skips them):")
        for path, reason in result.unreadable[:10]:
            say(f"  {path}: {reason}")
        if len(result.unreadable) > 10:
            say(f"  ... and {len(result.unreadable) - 10} more (see unreadable.csv)")
