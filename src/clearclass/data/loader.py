"""Where photos become tensors: decode each photo once (or every epoch), serve uint8 batches.

`decode_photos` reads every photo once, in parallel worker processes, before training
starts, so that a bad file never stops an epoch; files that cannot be decoded are listed.
What it keeps depends on the cache (`--cache`, `data.budget` says how much room each needs):
- memory: the pixels `resize_to_fit` produced (uint8, short side at `item_resize` for the
  `crop` method), in the process;
- disk: the same pixels in the on-disk cache of `data.cache` (so the next run skips the
  decoding too), read back batch by batch;
- off: nothing but the paths (`PhotoFiles`); the check decodes at a reduced size (Pillow's
  draft mode) and drops the pixels, and each epoch decodes every photo again, so memory
  does not grow with the number of photos.
`PhotoBatches` then cuts each photo's square (random in training, centred in validation)
and stacks uint8 batches in channels_last order, ready for `batch_augment`: in a thread
from pixels at hand, in DataLoader worker processes when each photo must be decoded. The
batches are the same whichever the cache and the number of workers.
"""

from __future__ import annotations

import io
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from queue import Queue

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from clearclass.data.cache import CachedPixels, entry_path, read_entry, write_entry
from clearclass.data.decode import UnreadableImage, crop_or_pad, open_rgb, resize_to_fit
from clearclass.errors import RunError
from clearclass.parallel import default_workers, ignore_interrupts, start_method, worker_context

CHECK_SIZE = 1  # `open_rgb`'s min_size when only checking: the smallest draft (1/8 scale)
Position = tuple[float, float]  # where the square is cut, (x, y) in [0, 1]


@dataclass
class Decoded:
    """What became of every photo, in the order given: pixels (or paths) and failures."""

    # A list of arrays (memory), CachedPixels read from disk on demand (disk), or
    # PhotoFiles decoded on demand (off): item i is `resize_to_fit`'s output either way.
    pixels: Sequence[np.ndarray]
    kept: list[int]  # index in the input of each entry of `pixels`
    skipped: list[tuple[Path, str]]  # (file, reason)
    from_cache: int = 0  # photos whose pixels were already in the cache


class PhotoFiles(Sequence):
    """A list-like view of photo files: item i is decoded (`resize_to_fit`) when asked for.

    What `--cache off` keeps: paths only, a few bytes per photo, cheap to send to workers.
    A photo that can no longer be decoded (moved, deleted or changed since it was checked)
    raises RunError naming it.
    """

    def __init__(self, paths: Sequence[Path], size: int, method: str):
        self.paths, self.size, self.method = [Path(p) for p in paths], size, method

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, indices: Sequence[int]) -> PhotoFiles:
        """The photos at `indices`, still undecoded."""
        return PhotoFiles([self.paths[i] for i in indices], self.size, self.method)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return PhotoFiles(self.paths[i], self.size, self.method)
        path = self.paths[i]
        try:
            img = open_rgb(path, min_size=self.size)
        except UnreadableImage as e:
            raise RunError(
                f"The photo {path} could not be read during training ({e}). It could when "
                "training started, so it was moved, deleted or changed since. Put it back, "
                "or train again: photos that cannot be read are then skipped and listed in "
                "RUN/skipped.csv.") from None
        return resize_to_fit(img, self.size, self.method)


class _DecodeDataset(Dataset):
    """Item i: (i, pixels or cache entry or None, reason it failed, whether it was cached).

    With `keep` False (`--cache off`) the photo is only checked: decoded at the smallest
    draft scale Pillow offers, and True stands for its pixels.
    """

    def __init__(self, paths: Sequence[Path], size: int, method: str, cache_dir: Path | None,
                 keep: bool = True):
        self.paths, self.size, self.method = list(paths), size, method
        self.cache_dir, self.keep = cache_dir, keep

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            data = Path(self.paths[i]).read_bytes()
        except OSError as e:
            return i, None, f"cannot read the file: {e.strerror or e}", False
        if not self.keep:
            try:
                open_rgb(io.BytesIO(data), min_size=CHECK_SIZE)
            except UnreadableImage as e:
                return i, None, str(e), False
            return i, True, "", False
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
    keep_pixels: bool = True,
) -> Decoded:
    """Decode and resize every photo once; unreadable files are listed, not raised.

    With `cache_dir`, pixels go to (or come from) the on-disk cache and `pixels` reads
    them back on demand; without, they are kept in memory. With `keep_pixels` False
    (`--cache off`) every photo is only checked, and `pixels` is the `PhotoFiles` of
    those that decode. Worker processes start as `parallel.worker_context` says.

    Example:
        decoded = decode_photos(sorted(Path("photos").rglob("*.jpg")), 224, "crop",
                                keep_pixels=False)  # --cache off: checked, nothing kept
        print(len(decoded.kept), decoded.skipped[:1], decoded.pixels.paths[0])
    """
    workers = default_workers() if workers is None else workers
    if len(paths) < 64:
        workers = 0  # starting processes costs more than a few photos
    loader = DataLoader(
        _DecodeDataset(paths, size, method, cache_dir if keep_pixels else None, keep_pixels),
        batch_size=None,
        num_workers=workers,
        collate_fn=keep_as_is,
        prefetch_factor=16 if workers else None,
        multiprocessing_context=worker_context() if workers else None,
        worker_init_fn=ignore_interrupts,
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
    if not keep_pixels:
        return Decoded(PhotoFiles([paths[i] for i in kept], size, method), kept, skipped)
    pixels = [results[i] for i in kept]
    if cache_dir is not None:
        pixels = CachedPixels(pixels)
    return Decoded(pixels, kept, skipped, from_cache)


def take(pixels: Sequence[np.ndarray], indices: Sequence[int]) -> Sequence[np.ndarray]:
    """The pixels at `indices`, without reading cached ones from disk (or decoding) yet."""
    if isinstance(pixels, (CachedPixels, PhotoFiles)):
        return pixels.take(indices)
    return [pixels[i] for i in indices]


@dataclass
class PhotoFailure:
    """Stands for a batch whose photo could not be had; the main process raises RunError.

    Returned rather than raised, so that a worker process's error reaches the user as the
    message alone, not wrapped in the worker's traceback.
    """

    message: str


class PhotoSquares(Dataset):
    """Item (i, position): (photo i's size x size x 3 uint8 square cut at position, its
    target: a class index, or a multi-hot row of labels).

    Picklable when `pixels` is (PhotoFiles, CachedPixels): what DataLoader workers get.
    """

    def __init__(self, pixels: Sequence[np.ndarray], targets: Sequence[int] | np.ndarray,
                 size: int, method: str):
        # A class index per photo, or (several labels per photo) a multi-hot row.
        self.pixels, self.targets = pixels, _as_targets(targets)
        self.size, self.method = size, method

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, key: tuple[int, Position]) -> tuple[np.ndarray, int] | PhotoFailure:
        i, position = key
        try:
            pixels = self.pixels[i]
        except (RunError, OSError) as e:  # a photo or cache entry gone since the check
            return PhotoFailure(str(e))
        return crop_or_pad(pixels, self.size, self.method, position), self.targets[i]


def _as_targets(targets: Sequence[int] | np.ndarray) -> np.ndarray:
    """Class indices as int64 (what cross-entropy takes); multi-hot rows as they come
    (uint8 from `PhotoSet.targets`: the loss makes them float per batch)."""
    array = np.asarray(targets)
    return array if array.ndim == 2 else array.astype(np.int64)


def stack_squares(items: list) -> tuple[torch.Tensor, torch.Tensor] | PhotoFailure:
    """DataLoader collate function: squares stacked N x S x S x 3 uint8, and the targets
    (N int64 class indices, or N multi-hot rows)."""
    for item in items:
        if isinstance(item, PhotoFailure):
            return item
    images = torch.from_numpy(np.stack([square for square, _ in items]))
    return images, torch.from_numpy(np.stack([target for _, target in items]))


class _EpochBatches:
    """DataLoader batch sampler: the batches of the current epoch, from `start_batch` on.

    Read anew at each iteration, so one DataLoader (and its worker processes) serves
    every epoch. It refers to the PhotoBatches weakly: a reference cycle would leave the
    workers to the garbage collector, which closes their queues before stopping them, and
    each then takes 5 seconds to give up.
    """

    def __init__(self, batches: PhotoBatches):
        self.batches = weakref.ref(batches)

    def __iter__(self) -> Iterator[list[tuple[int, Position]]]:
        batches = self.batches()
        return iter(batches.epoch_plan()[batches.start_batch:] if batches else [])

    def __len__(self) -> int:
        batches = self.batches()
        return len(batches) - batches.start_batch if batches else 0


class PhotoBatches:
    """Batches of (uint8 images N x 3 x S x S channels_last, int64 class indices).

    training=True: shuffled, random crop positions, last partial batch dropped (as fastai,
    so BatchNorm never sees a batch of one). The order is drawn from `seed` and the epoch
    number, so runs repeat exactly. `balanced` (`--balance sampler`, training only): instead
    of each photo once, an epoch is as many photos drawn with replacement, each with a
    chance proportional to 1 / the photos of its class, so that every class comes equally
    often; drawn from `seed` and the epoch too, so a resumed epoch goes on the same.

    `workers`: processes that decode photos when `pixels` is `PhotoFiles` (`--cache off`;
    None: one per core, at most 8; 0: a thread). Pixels at hand (a list, or the disk
    cache's entries) are cut in a thread, which is enough: on 2 cores an epoch of 1,000
    imagewoof-160 photos at 128 px took 0.17 s from the disk cache in the thread, 0.21 s
    from 2 workers. The batches are the same either way.

    `shard` = (rank, world_size) for distributed training; `batch_size` is then per
    process. In training every rank draws the same permutation (and the same crop
    positions, so they do not depend on the world size) and takes every world_size-th
    photo of it from its rank on, as many photos on every rank, hence as many batches
    (distributed training waits for all ranks at every step). Validation photos are shared
    the same way without dropping any, so the counts may differ by one.

    Example:
        decoded = decode_photos(sorted(Path("photos").rglob("*.jpg")), 224, "crop")
        targets = [0] * len(decoded.kept)
        batches = PhotoBatches(decoded.pixels, targets, 224, "crop", 8, training=True)
        batches.set_epoch(1, start_batch=1)  # resume epoch 1 at its second batch
        for images, targets in batches:
            print(images.shape)  # torch.Size([8, 3, 224, 224])
    """

    def __init__(
        self,
        pixels: Sequence[np.ndarray],
        targets: Sequence[int],
        size: int,
        method: str,
        batch_size: int,
        training: bool,
        seed: int = 0,
        pin_memory: bool = False,
        workers: int | None = 0,
        shard: tuple[int, int] = (0, 1),
        balanced: bool = False,
    ):
        if len(pixels) != len(targets):
            raise ValueError("pixels and targets differ in length")
        rank, world = shard
        if not 0 <= rank < world:
            raise ValueError(f"shard must be (rank, world_size) with 0 <= rank < world_size; "
                             f"got {shard}")
        # A class index per photo, or (several labels per photo) a multi-hot row.
        self.pixels, self.targets = pixels, torch.as_tensor(_as_targets(targets))
        self.size, self.method, self.batch_size = size, method, batch_size
        self.training, self.seed, self.epoch, self.start_batch = training, seed, 0, 0
        self.shard = (rank, world)
        # --balance sampler: each photo's chance to be drawn, 1 / the photos of its class.
        self.draw_weights = None
        if balanced and training and len(pixels):
            counts = torch.bincount(self.targets)
            self.draw_weights = 1.0 / counts[self.targets].double()
        n = len(pixels)
        # Photos this rank serves per epoch: the same on every rank in training.
        self.count = n // world if training else len(range(rank, n, world))
        self.drop_last = training and self.count > batch_size
        self.pin_memory = pin_memory  # page-locked, for asynchronous copies to a GPU
        self.workers = default_workers() if workers is None else workers
        self._loader: DataLoader | None = None  # kept: its workers serve every epoch

    def __len__(self) -> int:
        n = self.count
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Serve epoch `epoch`, from its batch `start_batch` (to resume an epoch midway:
        the batches before it are neither read nor decoded; `len` stays the epoch's)."""
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch must be between 0 and {len(self)} (the batches of "
                             f"an epoch); got {start_batch}")
        self.epoch, self.start_batch = epoch, start_batch

    def epoch_plan(self) -> list[list[tuple[int, Position]]]:
        """This rank's batches of the current epoch, each a list of (photo, crop position)."""
        n = len(self.pixels)
        rank, world = self.shard
        if self.training:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            if self.draw_weights is None:
                order = torch.randperm(n, generator=gen).tolist()
            else:  # every rank draws the same n photos and takes its share of them
                order = torch.multinomial(self.draw_weights, n, replacement=True,
                                          generator=gen).tolist()
            positions = [(x, y) for x, y in
                         torch.rand(n, 2, generator=gen, dtype=torch.float64).tolist()]
        else:
            order, positions = range(n), [(0.5, 0.5)] * n
        picks = range(rank, n, world)[: self.count]
        items = [(order[k], positions[k]) for k in picks]
        size = self.batch_size
        return [items[start : start + size] for start in range(0, len(self) * size, size)]

    @property
    def uses_workers(self) -> bool:
        """Whether batches come from worker processes (photos decoded every epoch)."""
        return self.workers > 0 and isinstance(self.pixels, PhotoFiles)

    def close(self) -> None:
        """Stop the worker processes now (they also stop when this object is deleted)."""
        self._loader = None

    def _finish(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(batch, PhotoFailure):
            raise RunError(batch.message)
        images, targets = batch
        if self.pin_memory:
            images, targets = images.pin_memory(), targets.pin_memory()
        # N x H x W x C viewed as N x C x H x W is channels_last, with no copy.
        return images.permute(0, 3, 1, 2), targets

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        squares = PhotoSquares(self.pixels, self.targets.numpy(), self.size, self.method)
        for batch in self.epoch_plan()[self.start_batch:]:
            yield self._finish(stack_squares([squares[key] for key in batch]))

    def _from_workers(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._loader is None:
            # A forked worker starts in milliseconds: each epoch forks its own, so the
            # training and validation workers never live at once (each keeps the pages the
            # training process has changed since the fork). A spawned one imports PyTorch
            # for seconds: it serves every epoch. Two batches ahead per worker keep the
            # training step fed.
            self._loader = DataLoader(
                PhotoSquares(self.pixels, self.targets.numpy(), self.size, self.method),
                batch_sampler=_EpochBatches(self), num_workers=self.workers,
                collate_fn=stack_squares, prefetch_factor=2,
                multiprocessing_context=worker_context(),
                persistent_workers=start_method() != "fork",
                worker_init_fn=ignore_interrupts)
        try:
            for batch in self._loader:
                yield self._finish(batch)
        except BaseException:  # an error, or the caller stopped midway: workers stop now
            self.close()
            raise

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.uses_workers:
            yield from self._from_workers()
            return
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
