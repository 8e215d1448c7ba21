"""How much room the decoded photos need, and whether the chosen cache has it.

Checked before decoding starts, so that a dataset bigger than memory (or than the cache
folder's disk) is one clear error that names the alternatives, not a process killed by the
system an hour into decoding. The room is estimated without decoding anything: the width
and height of a sample of the photos are read from their headers, `resize_to_fit`'s
geometry (`fitted_size`) gives the decoded size of each, and the mean is multiplied by the
number of photos.

The three caches (`--cache`):
- memory: the decoded photos are held by the training process; it may use half of the
  memory available when training starts.
- disk: they are kept in the cache folder (`data.cache`); it may use the free space of its
  disk less 10%, plus what these photos already have there (estimated on the sample).
- off: nothing is kept, every photo is decoded again in every epoch; never refused.
`--cache-limit` replaces the memory or disk default. Sizes are written with a unit:
B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from clearclass.data.cache import default_cache_dir, entry_path
from clearclass.data.decode import fitted_size
from clearclass.errors import SettingError

CACHE_MODES = ("memory", "disk", "off")
SAMPLE = 200  # photos whose headers are read: the estimate's error is a few percent
MEMORY_SHARE = 0.5  # of the memory available; the model, batches and the system need the rest
DISK_SHARE = 0.9  # of the cache disk's free space; a disk filled to the last byte misbehaves
NPY_HEADER = 128  # bytes before the pixels in a cache entry (numpy's .npy format)
BLOCK = 4096  # a file takes whole blocks on disk
ARRAY_OVERHEAD = 128  # bytes of a numpy array object besides its pixels
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]+)\s*")
SIZE_UNITS_HELP = ("a number and a unit: B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, "
                   "GiB, TiB (powers of 1024), e.g. 20GB or 1.5GiB")


def parse_size(text: str) -> int:
    """Bytes in a size written with its unit; the unit's case does not matter.

    Example:
        print(parse_size("20GB"), parse_size("1.5 GiB"), parse_size("500mb"))
        # 20000000000 1610612736 500000000
    """
    match = _SIZE.fullmatch(text)
    if not match or match[2].lower() not in _UNITS:
        raise ValueError(f"is not a size: {text!r}. Write {SIZE_UNITS_HELP}.")
    return int(float(match[1]) * _UNITS[match[2].lower()])


def format_size(n: float) -> str:
    """A byte count in the units people read (powers of 1000): `38 GB`, `1.2 GB`, `500 KB`."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            value = n / scale
            return f"{value:.1f} {unit}" if value < 9.95 else f"{value:.0f} {unit}"
    return f"{int(n)} B"


def available_memory() -> int | None:
    """Bytes of memory available to new allocations now, or None where it cannot be read.

    Linux's MemAvailable counts the page cache that can be given back; elsewhere the free
    pages (an underestimate).
    """
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a name this system knows
        return None


def free_space(folder: Path) -> int:
    """Free bytes on the disk of `folder`, which need not exist yet."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


@dataclass
class RoomEstimate:
    """The decoded photos' size in each cache, estimated from a sample of headers."""

    photos: int
    memory_bytes: int  # held in the process
    disk_bytes: int  # as cache entries (whole blocks), those already there included
    cached_share: float  # share of the photos whose entry is already in the cache folder
    sampled: int  # photos whose header was read (and, for disk, whose entry was looked for)

    def bytes_in(self, mode: str) -> int:
        return {"memory": self.memory_bytes, "disk": self.disk_bytes, "off": 0}[mode]


def estimate_room(paths: Sequence[Path], size: int, method: str,
                  cache_dir: Path | None = None, sample: int = SAMPLE) -> RoomEstimate:
    """How much room `resize_to_fit`'s output of every photo takes, read from headers only.

    With `cache_dir`, the sampled photos are also looked up in the cache (their bytes are
    hashed, which reads the sampled files, not the others), to estimate how many are there.
    The sample is the same on every call (a fixed seed), so the estimate repeats.
    """
    count = len(paths)
    chosen = random.Random(0).sample(range(count), min(count, sample))
    memory, disk, readable, cached = 0, 0, 0, 0
    looked_up = cache_dir is not None and Path(cache_dir).is_dir()
    for i in chosen:
        try:
            with warnings.catch_warnings():
                # Odd metadata, very large photos: decoding says what matters of them.
                warnings.simplefilter("ignore")
                with Image.open(paths[i]) as img:  # reads the header, not the pixels
                    width, height = img.size
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
            continue  # unreadable: it will be skipped, and take no room
        w, h = fitted_size(width, height, size, method)
        pixels = w * h * 3
        memory += pixels + ARRAY_OVERHEAD
        disk += -(-(pixels + NPY_HEADER) // BLOCK) * BLOCK
        readable += 1
        if looked_up:
            try:
                data = Path(paths[i]).read_bytes()
            except OSError:
                continue
            cached += entry_path(Path(cache_dir), data, size, method).exists()
    if not readable:  # no header could be read: count each photo as one size x size square
        memory, disk, readable = size * size * 3 + ARRAY_OVERHEAD, size * size * 3, 1
    # Scaled from the readable photos to all: files that will be skipped count as photos,
    # which errs on the side of more room.
    return RoomEstimate(photos=count, memory_bytes=round(memory / readable * count),
                        disk_bytes=round(disk / readable * count),
                        cached_share=cached / readable if looked_up else 0.0,
                        sampled=len(chosen))


@dataclass
class CacheRoom:
    """What the chosen cache needs and may use (None: no limit could be worked out)."""

    mode: str
    need: int
    limit: int | None
    why: str  # how the limit came about, in words

    def describe(self) -> str:
        """One sentence for the log: `The decoded photos take about 1.2 GB in memory ...`."""
        where = "in memory" if self.mode == "memory" else "in the disk cache"
        limit = f" (limit {format_size(self.limit)}: {self.why})" if self.limit else ""
        return f"The decoded photos take about {format_size(self.need)} {where}{limit}."


def check_cache_room(paths: Sequence[Path], size: int, method: str, mode: str,
                     limit: int | str | None = None, cache_dir: Path | None = None,
                     estimate: RoomEstimate | None = None) -> CacheRoom | None:
    """Refuse, before any decoding, a cache the decoded photos would not fit in.

    `mode`: memory, disk or off (never refused: returns None). `limit`: the most bytes the
    decoded photos may take in that cache (a number, or text such as `20GB`); by default
    half of the memory available now (memory), or the cache disk's free space less 10% plus
    what these photos already have in `cache_dir` (disk). Raises SettingError naming the
    estimate, the limit, what is available and the other choices.

    Example:
        photos = sorted(Path("photos").rglob("*.jpg"))
        room = check_cache_room(photos, 224, "crop", "memory", limit="20GB")
        print(room.describe())  # The decoded photos take about 4.7 MB in memory (...).
    """
    if mode not in CACHE_MODES:
        raise SettingError("cache", f"must be one of {', '.join(CACHE_MODES)}; got {mode!r}.")
    if mode == "off":
        return None
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    estimate = estimate or estimate_room(paths, size, method,
                                         cache_dir=cache_dir if mode == "disk" else None)
    need = estimate.bytes_in(mode)
    memory = available_memory()
    disk_free = free_space(cache_dir)
    already = round(estimate.disk_bytes * estimate.cached_share)
    explicit = limit is not None
    if limit is not None:
        given = limit if isinstance(limit, str) else format_size(limit)
        limit = parse_size(limit) if isinstance(limit, str) else int(limit)
        why = f"--cache-limit {given}"
    elif mode == "memory":
        if memory is None:  # this system does not say: nothing to check against
            return CacheRoom(mode, need, None, "the available memory is unknown")
        limit = int(memory * MEMORY_SHARE)
        why = f"half of the {format_size(memory)} of memory available now"
    else:
        limit = int(disk_free * DISK_SHARE) + already
        why = (f"the {format_size(disk_free)} free on its disk, less 10%"
               + (f", plus about {format_size(already)} these photos already have there"
                  if already else ""))
    room = CacheRoom(mode, need, limit, why)
    if need <= limit:
        return room

    off = ("--cache off (nothing kept: every photo decoded again each epoch, in --workers "
           "processes)")
    if mode == "memory":
        where = "in memory"
        others = [f"--cache disk (the cache folder {cache_dir} has {format_size(disk_free)} "
                  "free)", off]
    else:
        where = f"in the cache folder {cache_dir}"
        others = [off, "CLEARCLASS_CACHE_DIR set to a folder on a bigger disk"]
        if memory is not None and estimate.memory_bytes <= memory * MEMORY_SHARE:
            others.insert(0, f"--cache memory ({format_size(memory)} of memory available)")
    others.append("a larger --cache-limit" if explicit else "--cache-limit")
    setting, value = ("cache_limit", given) if explicit else ("cache", mode)
    raise SettingError(setting, f"{value}: the decoded photos need about {format_size(need)} "
                                f"{where}; the {mode} cache may use {format_size(limit)} "
                                f"({why}). Use {', '.join(others[:-1])}, or {others[-1]}.")
