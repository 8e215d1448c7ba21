from __future__ import annotations

import numpy as np
import pytest
import torch

from clearclass.data.decode import load_item
from clearclass.data.loader import PhotoBatches, PhotoFiles, decode_photos
from clearclass.errors import RunError
from clearclass.parallel import worker_context
from tests.conftest import make_photo


def test_decode_lists_unreadable_files_and_keeps_the_rest(tmp_path):
    good = [make_photo(tmp_path / f"{i}.jpg", size=(60, 40), seed=i) for i in range(3)]
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.jpg"
    text.write_text("hello")
    decoded = decode_photos([good[0], empty, good[1], text, good[2]], 32, "crop", workers=0)
    assert decoded.kept == [0, 2, 4]
    assert [p for p, _ in decoded.skipped] == [empty, text]
    assert all(reason for _, reason in decoded.skipped)
    assert [p.shape for p in decoded.pixels] == [(32, 48, 3)] * 3


def test_decode_with_worker_processes_matches_in_process(tmp_path):
    paths = [make_photo(tmp_path / f"{i}.png", size=(50 + i, 40), seed=i) for i in range(70)]
    one = decode_photos(paths, 24, "crop", workers=0)
    two = decode_photos(paths, 24, "crop", workers=2)
    assert one.kept == two.kept
    assert all(np.array_equal(a, b) for a, b in zip(one.pixels, two.pixels))


def _batches(n=10, training=True, batch_size=4, seed=0):
    pixels = [np.full((8, 12, 3), i, dtype=np.uint8) for i in range(n)]
    return PhotoBatches(pixels, list(range(n)), 8, "crop", batch_size, training, seed)


def test_training_batches_shuffle_repeatably_and_drop_the_last_partial_batch():
    batches = _batches()
    assert len(batches) == 2
    first = [labels.tolist() for _, labels in batches]
    assert [labels.tolist() for _, labels in batches] == first
    assert sorted(sum(first, [])) != list(range(8))  # shuffled, and 2 photos dropped
    batches.set_epoch(1)
    assert [labels.tolist() for _, labels in batches] != first


def test_images_match_their_labels_and_are_channels_last():
    for images, labels in _batches():
        assert images.shape == (4, 3, 8, 8) and images.dtype == torch.uint8
        assert images.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(images[:, 0, 0, 0], labels.to(torch.uint8))


def test_validation_batches_keep_order_and_every_photo():
    labels = [lab.tolist() for _, lab in _batches(training=False)]
    assert labels == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_validation_square_equals_the_prediction_preprocessing(tmp_path):
    path = make_photo(tmp_path / "p.jpg", size=(90, 60))
    decoded = decode_photos([path], 32, "crop", workers=0)
    images, _ = next(iter(PhotoBatches(decoded.pixels, [0], 32, "crop", 4, training=False)))
    assert np.array_equal(images[0].permute(1, 2, 0).numpy(), load_item(path, 32, "crop"))


def test_errors_in_the_batch_thread_reach_the_caller():
    batches = _batches()
    batches.pixels = [np.zeros((2, 2, 3), dtype=np.uint8)] * 10  # too small to crop 8 x 8
    with pytest.raises(ValueError):
        list(batches)


# --- the three caches: memory, disk, off ---------------------------------------------------


def _varied_photos(folder, n=70):
    """Photos of several shapes (the crops differ), enough for decode_photos' workers."""
    return [make_photo(folder / f"{i:02d}.jpg", size=(40 + 7 * (i % 5), 30 + 5 * (i % 4)),
                       seed=i) for i in range(n)]


def _epochs(batches, epochs=(0, 1), start_batch=0):
    out = []
    for epoch in epochs:
        batches.set_epoch(epoch, start_batch)
        out += [(images.clone(), labels.clone()) for images, labels in batches]
    return out


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) and torch.equal(u, v)
                                    for (x, u), (y, v) in zip(a, b))


@pytest.mark.parametrize("balanced", [  # and drawn class-balanced (--balance sampler)
    False, pytest.param(True, marks=pytest.mark.slow)])
def test_memory_disk_and_off_give_byte_identical_batches(tmp_path, balanced):
    photos = _varied_photos(tmp_path / "p")
    labels = [i % 3 if not balanced else min(i // 50, 2) for i in range(len(photos))]
    memory = decode_photos(photos, 24, "crop", workers=0)
    disk = decode_photos(photos, 24, "crop", workers=0, cache_dir=tmp_path / "cache")
    off = decode_photos(photos, 24, "crop", workers=2, keep_pixels=False)
    assert memory.kept == disk.kept == off.kept == list(range(len(photos)))
    for training in (True, False):
        def batches(decoded, workers=0, training=training):
            return PhotoBatches(decoded.pixels, labels, 24, "crop", 8, training, seed=5,
                                workers=workers, balanced=balanced)

        reference = _epochs(batches(memory))
        assert _same(reference, _epochs(batches(disk)))
        in_workers = batches(off, workers=2)
        assert in_workers.uses_workers
        assert _same(reference, _epochs(in_workers))
        assert _same(reference, _epochs(batches(off)))  # decoded in the thread
        # Resuming midway gives the rest of the same epoch, from the workers too.
        assert _same(_epochs(batches(memory), (1,), start_batch=3),
                     _epochs(in_workers, (1,), start_batch=3))


def test_off_keeps_paths_not_pixels_and_still_lists_unreadable_files(tmp_path):
    good = [make_photo(tmp_path / f"{i}.jpg", size=(60, 40), seed=i) for i in range(3)]
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good[0].read_bytes()[:300])
    files = [good[0], empty, good[1], truncated, good[2]]
    off = decode_photos(files, 32, "crop", workers=0, keep_pixels=False)
    memory = decode_photos(files, 32, "crop", workers=0)
    assert isinstance(off.pixels, PhotoFiles)
    assert off.pixels.paths == good and not any(
        isinstance(v, np.ndarray) for v in vars(off.pixels).values())
    assert off.kept == memory.kept == [0, 2, 4]
    assert off.skipped == memory.skipped and len(off.skipped) == 2
    assert all(np.array_equal(a, b) for a, b in zip(off.pixels, memory.pixels))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_photo_removed_during_training_is_an_error_that_names_it(tmp_path, workers):
    photos = _varied_photos(tmp_path, n=12)
    off = decode_photos(photos, 24, "crop", workers=0, keep_pixels=False)
    batches = PhotoBatches(off.pixels, [0] * 12, 24, "crop", 4, training=False,
                           workers=workers)
    photos[5].unlink()
    with pytest.raises(RunError) as caught:
        list(batches)
    message = str(caught.value)
    assert message.startswith(f"The photo {photos[5]} could not be read during training")
    assert "Traceback" not in message and "skipped.csv" in message


def test_each_rank_gets_as_many_batches_from_one_shared_permutation():
    n, size, world = 50, 4, 3
    whole = _batches(n=n, batch_size=size)
    whole.set_epoch(2)
    plan = [item for batch in whole.epoch_plan() for item in batch]
    assert len(plan) == 48  # 50 photos, batches of 4: the last 2 dropped
    ranks = []
    for rank in range(world):
        batches = PhotoBatches([np.full((8, 12, 3), i, dtype=np.uint8) for i in range(n)],
                               list(range(n)), 8, "crop", size, True, seed=0,
                               shard=(rank, world))
        batches.set_epoch(2)
        ranks.append(batches)
    assert [len(b) for b in ranks] == [4, 4, 4]  # 16 photos each, 2 of 50 left out
    gen = torch.Generator().manual_seed(2)
    order = torch.randperm(n, generator=gen).tolist()
    served = [[item for batch in b.epoch_plan() for item in batch] for b in ranks]
    for rank, items in enumerate(served):
        assert [i for i, _ in items] == order[rank::world][:16]
    # A photo's crop position does not depend on the world size.
    positions = dict(plan)
    assert all(positions.get(i, p) == p for items in served for i, p in items)
    labels = [lab.tolist() for _, lab in ranks[1]]
    assert sum(labels, []) == [i for i, _ in served[1]]
    # Validation: every photo once, in order; sizes may differ by one.
    valid = [PhotoBatches([np.zeros((8, 8, 3), np.uint8)] * n, list(range(n)), 8, "crop",
                          size, False, shard=(rank, world)) for rank in range(world)]
    seen = [sum((lab.tolist() for _, lab in b), []) for b in valid]
    assert seen == [list(range(n))[rank::world] for rank in range(world)]
    assert [len(b) for b in valid] == [5, 5, 4]
    with pytest.raises(ValueError, match="shard must be"):
        PhotoBatches([], [], 8, "crop", 4, True, shard=(3, 3))


def test_set_epoch_resumes_midway_without_reading_the_batches_before():
    class Counted(list):
        reads: list = []

        def __getitem__(self, i):
            Counted.reads.append(i)
            return super().__getitem__(i)

    pixels = Counted(np.full((8, 12, 3), i, dtype=np.uint8) for i in range(40))
    batches = PhotoBatches(pixels, list(range(40)), 8, "crop", 4, training=True, seed=1)
    full = _epochs(batches, (3,))
    Counted.reads.clear()
    batches.set_epoch(3, start_batch=7)
    rest = [(images.clone(), labels.clone()) for images, labels in batches]
    assert len(batches) == 10 and _same(rest, full[7:])
    assert sorted(Counted.reads) == sorted(sum((lab.tolist() for _, lab in rest), []))
    with pytest.raises(ValueError, match="start_batch must be between 0 and 10"):
        batches.set_epoch(3, start_batch=11)


def _spawn_photos(folder, monkeypatch, method="spawn"):
    photos = _varied_photos(folder)
    (folder / "bad.jpg").write_text("not a photo")
    monkeypatch.setenv("CLEARCLASS_START_METHOD", method)
    assert worker_context().get_start_method() == method
    return photos, [*photos[:10], folder / "bad.jpg", *photos[10:]]


@pytest.mark.slow  # worker processes started by spawn import PyTorch
def test_decoding_workers_started_by_spawn_find_the_same_photos(tmp_path, monkeypatch):
    _, files = _spawn_photos(tmp_path, monkeypatch)
    here = decode_photos(files, 24, "crop", workers=0, keep_pixels=False)
    spawned = decode_photos(files, 24, "crop", workers=2, keep_pixels=False)
    assert (spawned.kept, spawned.skipped) == (here.kept, here.skipped)
    assert spawned.pixels.paths == here.pixels.paths and len(here.skipped) == 1


@pytest.mark.slow  # worker processes started by spawn import PyTorch
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_batch_workers_started_by_spawn_or_forkserver_give_the_same_batches(
        tmp_path, monkeypatch, method):
    photos, _ = _spawn_photos(tmp_path, monkeypatch, method)
    labels = [i % 3 for i in range(len(photos))]
    here = decode_photos(photos, 24, "crop", workers=0)
    reference = _epochs(PhotoBatches(here.pixels, labels, 24, "crop", 8, True, seed=2))
    off = decode_photos(photos, 24, "crop", workers=0, keep_pixels=False)
    batches = PhotoBatches(off.pixels, labels, 24, "crop", 8, True, seed=2, workers=2)
    assert _same(reference, _epochs(batches))
    batches.close()


# --- --balance sampler ----------------------------------------------------------------------

def _imbalanced(counts=(900, 90, 10), batch_size=10, seed=0, shard=(0, 1), training=True):
    """PhotoBatches over classes of `counts` photos, drawn class-balanced (--balance sampler)."""
    targets = [c for c, k in enumerate(counts) for _ in range(k)]
    pixels = [np.zeros((8, 8, 3), np.uint8)] * len(targets)
    return PhotoBatches(pixels, targets, 8, "crop", batch_size, training, seed, shard=shard,
                        balanced=True)


def _drawn(batches, epoch):
    batches.set_epoch(epoch)
    return [item for batch in batches.epoch_plan() for item in batch]


def test_the_balanced_sampler_draws_every_class_about_as_often_and_as_many_photos():
    batches = _imbalanced()
    assert len(batches) == 100  # an epoch keeps its photos (1000) and its steps
    targets = batches.targets.numpy()
    drawn = np.concatenate([[i for i, _ in _drawn(batches, epoch)] for epoch in range(5)])
    per_class = np.bincount(targets[drawn], minlength=3)
    # 5000 draws, 1/3 each: 1667 expected, a standard deviation of 33; the seed is fixed.
    assert np.all(np.abs(per_class - 5000 / 3) < 150), per_class
    assert len(set(drawn[targets[drawn] == 2].tolist())) == 10  # all of the rare class
    assert len(set(drawn.tolist())) < 1000  # with replacement: not every photo comes


def test_the_balanced_draw_follows_the_seed_and_the_epoch_only():
    assert _drawn(_imbalanced(), 3) == _drawn(_imbalanced(), 3)
    assert _drawn(_imbalanced(), 3) != _drawn(_imbalanced(), 4)
    assert _drawn(_imbalanced(), 3) != _drawn(_imbalanced(seed=1), 3)


def test_each_process_takes_a_disjoint_slice_of_the_same_balanced_draw():
    n, world, epoch = 1000, 3, 2
    whole = _imbalanced(batch_size=12)
    gen = torch.Generator().manual_seed(epoch)  # seed 0: the generator PhotoBatches uses
    order = torch.multinomial(whole.draw_weights, n, replacement=True, generator=gen).tolist()
    assert [i for i, _ in _drawn(whole, epoch)] == order[:len(whole) * 12]
    shares = [_drawn(_imbalanced(batch_size=4, shard=(rank, world)), epoch)
              for rank in range(world)]
    assert [len(share) for share in shares] == [332] * world  # 333 each, in batches of 4
    for rank, share in enumerate(shares):
        assert [i for i, _ in share] == order[rank::world][:332]
    # Draw k (photo and crop position) goes to process k % world: disjoint slices of one
    # draw, whatever the number of processes.
    drawn = _drawn(whole, epoch)
    assert all(share == drawn[rank::world][:332] for rank, share in enumerate(shares))


def test_a_balanced_epoch_resumed_midway_serves_the_rest_of_the_same_batches():
    batches = _imbalanced(counts=(30, 6, 4))
    whole = _epochs(batches, (1,))
    assert _same(_epochs(batches, (1,), start_batch=2), whole[2:])


def test_validation_photos_are_never_resampled():
    labels = [lab.tolist() for _, lab in _imbalanced(counts=(6, 2), training=False)]
    assert sum(labels, []) == [0] * 6 + [1] * 2
