"""Reading a run's photos once before training: each decoded, resized and kept (in memory
or the disk cache), or only checked (`--cache off`); unreadable files are set aside.

Kept apart from the loop so that training starts from photos already read, as
torchvision's reference starts from a dataset.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clearclass import fileio
from clearclass.data.budget import check_cache_room
from clearclass.data.cache import default_cache_dir
from clearclass.data.loader import decode_photos
from clearclass.data.sources import PhotoSet
from clearclass.parallel import check_process_count, default_workers
from clearclass.progress import bar, say, warn


@dataclass
class ReadPhotos:
    """The photos that could be read, their pixels (in the same order), and the others."""

    photo_set: PhotoSet
    pixels: Sequence[np.ndarray]
    skipped: list[tuple[Path, str]]  # (file, why it could not be read)


def read_photos(photo_set: PhotoSet, size: int, method: str, cache: str,
                cache_limit: int | str | None = None, workers: int | None = None,
                shard: tuple[int, int] = (0, 1),
                wait_for_all: Callable[[], None] | None = None,
                listed_in: str | None = "RUN/skipped.csv") -> ReadPhotos:
    """Every photo checked (and, unless `cache` is "off", decoded and kept) before training.

    `shard` (rank, processes): under torchrun with the disk cache, each process first
    decodes its share of the photos into the cache, so that no photo is decoded twice (nor
    written by two processes at once); after `wait_for_all` (a barrier), every process finds
    all of them there. `listed_in`: where the caller lists the unreadable files, for the
    warning.
    """
    paths = [p.path for p in photo_set.photos]
    folder = usable_cache_dir() if cache == "disk" else None
    mode = "memory" if cache == "disk" and folder is None else cache
    # Before any decoding: a dataset the cache cannot hold is one error naming the others.
    room = check_cache_room(paths, size, method, mode, cache_limit, folder)
    if room is not None:
        say(room.describe())
    t0 = time.perf_counter()
    rank, processes = shard
    if processes > 1 and folder is not None:
        share = paths[rank::processes]
        with bar("reading photos (this process's share)", len(share)) as progress:
            decode_photos(share, size, method, workers=workers, on_progress=progress.advance,
                          cache_dir=folder)
        if wait_for_all is not None:
            wait_for_all()
    with bar("checking photos" if mode == "off" else "reading photos", len(paths)) as progress:
        decoded = decode_photos(paths, size, method, workers=workers,
                                on_progress=progress.advance, cache_dir=folder,
                                keep_pixels=mode != "off")
    cached = f", {decoded.from_cache} of them already decoded in {folder}" if folder else ""
    if mode == "off":
        cached = "; each is decoded again every epoch (--cache off)"
    say(f"{'Checked' if mode == 'off' else 'Read'} {len(paths)} photos in "
        f"{time.perf_counter() - t0:.1f} s{cached}.")
    if decoded.skipped:
        listed = f" (listed in {listed_in})" if listed_in else ""
        warn(f"Skipped {len(decoded.skipped)} unreadable file(s){listed}, e.g. "
             f"{decoded.skipped[0][0]}: {decoded.skipped[0][1]}")
        photo_set = photo_set.without({p for p, _ in decoded.skipped})
    return ReadPhotos(photo_set, decoded.pixels, list(decoded.skipped))


def workers_per_process(workers: int | None, processes_here: int) -> int | None:
    """`--workers`, or the cores shared among the `processes_here` training processes on this
    machine (None: decode_photos' default)."""
    check_process_count("workers", workers, "processes that decode photos")
    if workers is not None or processes_here == 1:
        return workers
    return max(1, default_workers() // processes_here)


def usable_cache_dir() -> Path | None:
    """The decoded-photo cache folder, or None (photos decoded into memory) with a warning
    when it cannot be written: a file of that name, no permission, a read-only disk."""
    folder = default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fileio.write_text(folder / ".writable", "")
    except OSError as e:
        warn(f"Cannot write the decoded-photo cache in {folder} ({e.strerror or e}); decoding "
             "into memory instead. Set CLEARCLASS_CACHE_DIR to a writable folder, or pass "
             "--cache memory or --cache off.")
        return None
    return folder
