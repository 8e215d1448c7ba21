"""Where photos become tensors: decode each photo once, then serve uint8 batches.

`decode_photos` reads every photo once, in parallel worker processes, and keeps the pixels
`resize_to_fit` produced (uint8, short side at `item_resize` for the `crop` method), in the
on-disk cache of `data.cache` (so the next run skips the decoding too) or in memory. Files
that cannot be decoded are found there, before training starts, so a bad file never stops
an epoch. `PhotoBatches` then cuts each photo's square (random in training, centred in
validation) and stacks uint8 batches in channels_last order, ready for `batch_augment`.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from queue import Queue

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from clearclass.data.cache import CachedPixels, entry_path, read_entry, write_entry
from clearclass.data.decode import UnreadableImage, crop_or_pad, open_rgb, resize_to_fit
from clearclass.parallel import default_workers


@dataclass
class Decoded:
    """Pixels of every readable photo, in the order given, and the files that failed."""

    pixels: Sequence[np.ndarray]  # a list, or CachedPixels read from disk on demand
    kept: list[int]  # index in the input of each entry of `pixels`
    skipped: list[tuple[Path, str]]  # (file, reason)
    from_cache: int = 0  # photos whose pixels were already in the cache


class _DecodeDataset(Dataset):
    """Item i: (i, pixels or cache entry or None, reason it failed, whether it was cached)."""

    def __init__(self, paths: Sequence[Path], size: int, method: str, cache_dir: Path | None):
        self.paths, self.size, self.method = list(paths), size, method
        self.cache_dir = cache_dir

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            data = Path(self.paths[i]).read_bytes()
        except OSError as e:
            return i, None, f"cannot read the file: {e.strerror or e}", False
        entry = None
        if self.cache_dir is not None:
            entry = entry_path(self.cache_dir, data, self.size, self.method)
            if read_entry(entry, header_only=True) is not None:
                return i, entry, "", True
        try:
            img = open_rgb(io.BytesIO(data), min_size=self.size)
        except UnreadableImage as e:
            return i, None, str(e), False
        pixels = resize_to_fit(img, self.size, self.method)
        if entry is None:
            return i, pixels, "", False
        try:
            write_entry(entry, pixels)
        except OSError:  # the cache's disk is full: this photo stays in memory instead
            return i, pixels, "", False
        return i, entry, "", False


def keep_as_is(sample):
    """DataLoader collate function that leaves samples as they are."""
    return sample


def decode_photos(
    paths: Sequence[Path],
    size: int,
    method: str,
    workers: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    cache_dir: Path | None = None,
) -> Decoded:
    """Decode and resize every photo once; unreadable files are listed, not raised.

    With `cache_dir`, pixels go to (or come from) the on-disk cache and `pixels` reads
    them back on demand; without, they are kept in memory.
    """
    workers = default_workers() if workers is None else workers
    if len(paths) < 64:
        workers = 0  # starting processes costs more than a few photos
    loader = DataLoader(
        _DecodeDataset(paths, size, method, cache_dir),
        batch_size=None,
        num_workers=workers,
        collate_fn=keep_as_is,
        prefetch_factor=16 if workers else None,
    )
    results: list = [None] * len(paths)
    skipped, from_cache = [], 0
    for i, pixels, reason, cached in loader:
        if pixels is None:
            skipped.append((Path(paths[i]), reason))
        else:
            results[i] = pixels
            from_cache += cached
        if on_progress:
            on_progress(1)
    kept = [i for i, p in enumerate(results) if p is not None]
    pixels = [results[i] for i in kept]
    if cache_dir is not None:
        pixels = CachedPixels(pixels)
    return Decoded(pixels, kept, skipped, from_cache)


def take(pixels: Sequence[np.ndarray], indices: Sequence[int]) -> Sequence[np.ndarray]:
    """The pixels at `indices`, without reading cached ones from disk yet."""
    if isinstance(pixels, CachedPixels):
        return pixels.take(indices)
    return [pixels[i] for i in indices]


class PhotoBatches:
    """Batches of (uint8 images N x 3 x S x S channels_last, int64 labels).

    training=True: shuffled, random crop positions, last partial batch dropped (as fastai,
    so BatchNorm never sees a batch of one). The order is drawn from `seed` and the epoch
    number, so runs repeat exactly.
    """

    def __init__(
        self,
        pixels: Sequence[np.ndarray],
        labels: Sequence[int],
        size: int,
        method: str,
        batch_size: int,
        training: bool,
        seed: int = 0,
        pin_memory: bool = False,
    ):
        if len(pixels) != len(labels):
            raise ValueError("pixels and labels differ in length")
        self.pixels, self.labels = pixels, torch.as_tensor(list(labels), dtype=torch.long)
        self.size, self.method, self.batch_size = size, method, batch_size
        self.training, self.seed, self.epoch, self.start_batch = training, seed, 0, 0
        self.drop_last = training and len(pixels) > batch_size
        self.pin_memory = pin_memory  # page-locked, for asynchronous copies to a GPU

    def __len__(self) -> int:
        n = len(self.pixels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """The epoch whose batches to serve, from batch `start_batch` (resuming mid-epoch)."""
        self.epoch, self.start_batch = epoch, start_batch

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.pixels)
        if self.training:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=gen)
            positions = torch.rand(n, 2, generator=gen, dtype=torch.float64).tolist()
        else:
            order = torch.arange(n)
            positions = [(0.5, 0.5)] * n
        first = self.start_batch * self.batch_size
        for start in range(first, len(self) * self.batch_size, self.batch_size):
            idx = order[start : start + self.batch_size].tolist()
            squares = [
                crop_or_pad(self.pixels[i], self.size, self.method, positions[k])
                for k, i in zip(range(start, start + len(idx)), idx)
            ]
            images = torch.from_numpy(np.stack(squares))
            labels = self.labels[idx]
            if self.pin_memory:
                images, labels = images.pin_memory(), labels.pin_memory()
            # N x H x W x C viewed as N x C x H x W is channels_last, with no copy.
            yield images.permute(0, 3, 1, 2), labels

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # Cutting and stacking a batch takes milliseconds; a thread keeps two ready so a
        # fast GPU never waits on it (numpy copies release the GIL).
        queue: Queue = Queue(maxsize=2)
        stop = threading.Event()

        def produce() -> None:
            try:
                for batch in self._batches():
                    if stop.is_set():
                        return
                    queue.put(batch)
            except BaseException as e:  # re-raised in the consumer
                queue.put(e)
            queue.put(None)

        thread = threading.Thread(target=produce, daemon=True)
        thread.start()
        try:
            while (item := queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while thread.is_alive():
                while not queue.empty():
                    queue.get_nowait()
                thread.join(timeout=0.05)
