from __future__ import annotations

import pytest

from clearclass.data import budget
from clearclass.data.budget import (
    check_cache_room,
    estimate_room,
    format_size,
    parse_size,
)
from clearclass.data.loader import decode_photos
from clearclass.errors import SettingError
from tests.conftest import make_photo


def test_sizes_are_read_in_powers_of_1000_or_1024_with_a_unit():
    assert parse_size("20GB") == 20 * 10**9
    assert parse_size("500 MB") == 500 * 10**6
    assert parse_size("1.5GiB") == 3 * 2**29
    assert parse_size("1kib") == 1024 and parse_size("1KB") == 1000
    assert parse_size("2TB") == 2 * 10**12 and parse_size("7 B") == 7
    for bad in ("20", "20 G", "GB", "-1GB", "1e3MB", "20 GB free"):
        with pytest.raises(ValueError, match="is not a size.*KiB, MiB, GiB, TiB"):
            parse_size(bad)
    assert [format_size(n) for n in (512, 1_500, 38.2e9, 9.96e9, 1.2e12)] == \
        ["512 B", "1.5 KB", "38 GB", "10 GB", "1.2 TB"]


def _photos(folder, sizes):
    return [make_photo(folder / f"{i}.jpg", size=s, seed=i) for i, s in enumerate(sizes)]


@pytest.mark.parametrize("method", ["crop", "squish", "pad"])
def test_the_estimate_follows_resize_to_fit_without_decoding(tmp_path, method):
    photos = _photos(tmp_path, [(60, 40), (40, 90), (33, 33), (120, 50)])
    estimate = estimate_room(photos, 32, method)
    decoded = decode_photos(photos, 32, method, workers=0)
    exact = sum(p.nbytes for p in decoded.pixels)
    # Every photo is in the sample: the estimate is exact but for the arrays' overhead.
    assert estimate.memory_bytes == exact + len(photos) * budget.ARRAY_OVERHEAD
    assert estimate.disk_bytes >= exact and estimate.disk_bytes % budget.BLOCK == 0


def test_the_estimate_scales_a_sample_to_every_photo(tmp_path):
    photos = _photos(tmp_path, [(64, 48)] * 10)
    estimate = estimate_room(photos * 30, 32, "crop", sample=20)
    assert estimate.sampled == 20 and estimate.photos == 300
    assert estimate.memory_bytes == 300 * (32 * 43 * 3 + budget.ARRAY_OVERHEAD)


def test_photos_already_in_the_disk_cache_are_counted(tmp_path):
    photos = _photos(tmp_path, [(64, 48)] * 8)
    cache = tmp_path / "cache"
    assert estimate_room(photos, 32, "crop", cache_dir=cache).cached_share == 0
    decode_photos(photos[:4], 32, "crop", workers=0, cache_dir=cache)
    assert estimate_room(photos, 32, "crop", cache_dir=cache).cached_share == 0.5


def test_a_tiny_memory_limit_is_refused_with_figures_and_the_alternatives(tmp_path,
                                                                          monkeypatch):
    photos = _photos(tmp_path, [(64, 48)] * 3)
    monkeypatch.setattr(budget, "available_memory", lambda: 22 * 10**9)
    monkeypatch.setattr(budget, "free_space", lambda folder: 120 * 10**9)
    with pytest.raises(SettingError) as caught:
        check_cache_room(photos, 32, "crop", "memory", limit="1KB", cache_dir=tmp_path / "c")
    message = caught.value.as_option()
    assert message.startswith("--cache-limit 1KB: the decoded photos need about 13 KB in "
                              "memory; the memory cache may use 1.0 KB (--cache-limit 1KB).")
    assert "--cache disk (the cache folder" in message and "has 120 GB free" in message
    assert "--cache off" in message and "a larger --cache-limit" in message
    # By default: half of the memory available now.
    room = check_cache_room(photos, 32, "crop", "memory")
    assert room.limit == 11 * 10**9 and "half of the 22 GB of memory available" in room.why
    monkeypatch.setattr(budget, "available_memory", lambda: 10_000)
    with pytest.raises(SettingError, match=r"^cache memory: .* may use 5.0 KB \(half of the "
                                           r"10 KB of memory available now\)"):
        check_cache_room(photos, 32, "crop", "memory")


def test_a_disk_cache_too_small_is_refused_and_off_never(tmp_path, monkeypatch):
    photos = _photos(tmp_path, [(64, 48)] * 3)
    cache = tmp_path / "cache"
    monkeypatch.setattr(budget, "available_memory", lambda: 22 * 10**9)
    monkeypatch.setattr(budget, "free_space", lambda folder: 10_000)
    with pytest.raises(SettingError) as caught:
        check_cache_room(photos, 32, "crop", "disk", cache_dir=cache)
    message = caught.value.as_option()
    assert message.startswith(f"--cache disk: the decoded photos need about 25 KB in the "
                              f"cache folder {cache}; the disk cache may use 9.0 KB (the "
                              "10 KB free on its disk, less 10%).")
    assert "--cache memory (22 GB of memory available)" in message
    assert "CLEARCLASS_CACHE_DIR" in message and "--cache off" in message
    with pytest.raises(SettingError, match="^cache_limit 1KB: "):
        check_cache_room(photos, 32, "crop", "disk", limit="1KB", cache_dir=cache)
    # Photos already in the cache need no new room: the limit grows by what they take.
    decode_photos(photos, 32, "crop", workers=0, cache_dir=cache)
    room = check_cache_room(photos, 32, "crop", "disk", cache_dir=cache)
    assert room.limit == 9_000 + room.need and "already have there" in room.why
    assert check_cache_room(photos, 32, "crop", "off", limit="1B") is None
