"""Decoded photos kept on disk, so each photo is decoded once, not once per run or epoch.

An entry is what `resize_to_fit` made of one photo for one (size, method): a uint8
height x width x 3 array in a `.npy` file, named by a hash of the photo's bytes and those
settings. A photo whose bytes change gets a new name and is decoded again; a moved or
renamed photo keeps its entry. Training reads each batch's entries from disk (the
operating system's page cache keeps them in memory while there is room), so the process
itself never holds every photo's pixels.

The folder is `$CLEARCLASS_CACHE_DIR`, else `$XDG_CACHE_HOME/clearclass/pixels`, else
`~/.cache/clearclass/pixels`. Deleting it is always safe.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

CACHE_VERSION = 1  # bump when resize_to_fit's output for the same input changes


def default_cache_dir() -> Path:
    if os.environ.get("CLEARCLASS_CACHE_DIR"):
        return Path(os.environ["CLEARCLASS_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "clearclass" / "pixels"


def entry_path(cache_dir: Path, photo_bytes: bytes, size: int, method: str) -> Path:
    """Where the pixels of a photo with these bytes, at these settings, are kept."""
    digest = hashlib.blake2b(photo_bytes, digest_size=20).hexdigest()
    return cache_dir / digest[:2] / f"{digest}-{size}-{method}-v{CACHE_VERSION}.npy"


def read_entry(path: Path, header_only: bool = False) -> np.ndarray | None:
    """The cached pixels, or None when the entry is missing or damaged.

    `header_only`: check the entry without reading its pixels (they are memory-mapped).
    """
    try:
        pixels = np.load(path, mmap_mode="r" if header_only else None, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        return None
    return pixels


def write_entry(path: Path, pixels: np.ndarray) -> None:
    """Write atomically: another process may be reading or writing the same entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, np.ascontiguousarray(pixels), allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def usage(cache_dir: Path) -> tuple[int, int]:
    """(entries, bytes) in the cache folder."""
    entries = [p for p in cache_dir.glob("*/*.npy")] if cache_dir.is_dir() else []
    return len(entries), sum(p.stat().st_size for p in entries)


def clear(cache_dir: Path) -> int:
    """Delete every entry (and the folders they were in); returns how many were deleted."""
    count = 0
    if cache_dir.is_dir():
        for entry in cache_dir.glob("*/*.npy"):
            entry.unlink(missing_ok=True)
            count += 1
        for folder in cache_dir.iterdir():
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    return count


class CachedPixels(Sequence):
    """A list-like view of cache entries: item i is read from disk when asked for."""

    def __init__(self, entries: Sequence[Path]):
        self.entries = list(entries)

    def __len__(self) -> int:
        return len(self.entries)

    def take(self, indices: Sequence[int]) -> CachedPixels:
        """The entries at `indices`, still unread."""
        return CachedPixels([self.entries[i] for i in indices])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return CachedPixels(self.entries[i])
        pixels = read_entry(self.entries[i])
        if pixels is None:
            raise OSError(f"The decoded-photo cache entry {self.entries[i]} disappeared or is "
                          "damaged; run the command again to rebuild it.")
        return pixels
