from __future__ import annotations

import shutil

import numpy as np

from clearclass.data.cache import CachedPixels, entry_path, read_entry
from clearclass.data.decode import open_rgb, resize_to_fit
from clearclass.data.loader import decode_photos
from tests.conftest import make_photo, real_photo_root


def _real_photos(n: int = 6):
    root = real_photo_root()
    breed = sorted(d for d in root.iterdir() if d.is_dir())[0]
    return sorted(p for p in breed.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))[:n]


def test_a_cached_photo_equals_a_freshly_decoded_one(tmp_path):
    photos = _real_photos()
    first = decode_photos(photos, 224, "crop", workers=0, cache_dir=tmp_path)
    assert first.from_cache == 0
    again = decode_photos(photos, 224, "crop", workers=0, cache_dir=tmp_path)
    assert again.from_cache == len(photos)
    assert isinstance(again.pixels, CachedPixels)
    for path, cached in zip(photos, again.pixels):
        fresh = resize_to_fit(open_rgb(path, min_size=224), 224, "crop")
        assert cached.dtype == np.uint8
        assert np.array_equal(cached, fresh)


def test_the_cache_is_invalidated_when_a_file_changes(tmp_path):
    photo = make_photo(tmp_path / "p.jpg", (200, 40, 40), size=(64, 48), seed=1)
    cache = tmp_path / "cache"
    red = decode_photos([photo], 32, "crop", workers=0, cache_dir=cache).pixels[0]
    make_photo(photo, (40, 40, 200), size=(64, 48), seed=1)  # same name, new content
    changed = decode_photos([photo], 32, "crop", workers=0, cache_dir=cache)
    assert changed.from_cache == 0
    blue = changed.pixels[0]
    assert red[..., 0].mean() > red[..., 2].mean() and blue[..., 2].mean() > blue[..., 0].mean()


def test_entries_depend_on_size_and_method_not_on_the_file_name(tmp_path):
    photo = make_photo(tmp_path / "a.jpg", size=(80, 60))
    copy = shutil.copy(photo, tmp_path / "renamed copy.jpg")
    cache = tmp_path / "cache"
    decode_photos([photo], 32, "crop", workers=0, cache_dir=cache)
    assert decode_photos([copy], 32, "crop", workers=0, cache_dir=cache).from_cache == 1
    assert decode_photos([photo], 32, "pad", workers=0, cache_dir=cache).from_cache == 0
    assert decode_photos([photo], 48, "crop", workers=0, cache_dir=cache).from_cache == 0


def test_a_damaged_entry_is_decoded_again(tmp_path):
    photo = make_photo(tmp_path / "a.jpg", size=(80, 60))
    cache = tmp_path / "cache"
    decode_photos([photo], 32, "crop", workers=0, cache_dir=cache)
    entry = entry_path(cache, photo.read_bytes(), 32, "crop")
    entry.write_bytes(entry.read_bytes()[:20])
    assert read_entry(entry) is None
    again = decode_photos([photo], 32, "crop", workers=0, cache_dir=cache)
    assert again.from_cache == 0 and again.pixels[0].shape == (32, 43, 3)


def test_cache_usage_and_clear(tmp_path):
    from clearclass.data.cache import clear, usage

    photos = [make_photo(tmp_path / f"{i}.jpg", size=(40, 30), seed=i) for i in range(3)]
    cache = tmp_path / "cache"
    decode_photos(photos, 24, "crop", workers=0, cache_dir=cache)
    entries, size = usage(cache)
    assert entries == 3 and size > 3 * 24 * 24 * 3
    assert clear(cache) == 3
    assert usage(cache) == (0, 0)
    assert usage(tmp_path / "never made") == (0, 0)
