from __future__ import annotations

import numpy as np
import pytest
import torch

from clearclass.data.decode import load_item
from clearclass.data.loader import PhotoBatches, decode_photos
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
