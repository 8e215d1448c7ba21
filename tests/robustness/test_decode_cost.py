"""What a photo costs to decode, judged from its header (`data.decode.decode_cost`), and
what the resize makes of any aspect ratio: the rules `clearclass predict`, the API, the
server and training share (issue 21)."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clearclass.data.budget import estimate_room
from clearclass.data.decode import (
    LONGEST_FIT,
    UnreadableImage,
    crop_or_pad,
    decode_cost,
    fitted_size,
    load_item,
    open_rgb,
    resize_to_fit,
)
from clearclass.data.loader import decode_photos

MB = 1_000_000

# Decoding in a process of its own, its peak resident memory over what it had before.
PEAK = r"""
import sys
from pathlib import Path
from clearclass.data.decode import decode_cost, load_item
path, size, method = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
load_item(sys.argv[4], size, method)  # a small photo: what any decoding loads once
Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here
before = status("VmRSS")
cost = decode_cost(path, size, method)
load_item(path, size, method, max_bytes=None)
print(status("VmHWM") - before, cost.bytes)
"""


def _gradient(width: int, height: int) -> np.ndarray:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 60, height, dtype=np.float32)[:, None]
    grey = ((x + y) % 256).astype(np.uint8)
    return np.stack([grey, grey[::-1], 255 - grey], -1)


def _photo(folder: Path, kind: str, side: int) -> Path:
    rgb = _gradient(side, side)
    image, options, suffix = Image.fromarray(rgb, "RGB"), {}, "png"
    if kind == "L":
        image = image.convert("L")
    elif kind == "RGBA":
        image = Image.fromarray(np.dstack([rgb, rgb[..., 0]]), "RGBA")
    elif kind == "P+transparency":
        image, options = image.convert("P"), {"transparency": 0}
    elif kind == "I;16":
        image = Image.fromarray(rgb[..., 0].astype(np.uint16) * 200)
    elif kind == "progressive JPEG":
        options, suffix = {"progressive": True, "quality": 90}, "jpg"
    elif kind == "WebP":
        suffix = "webp"
    elif kind == "F":
        image, suffix = Image.fromarray(rgb[..., 0].astype(np.float32) / 255, "F"), "tif"
    path = folder / f"{kind.replace(' ', '_').replace(';', '').replace('+', '_')}.{suffix}"
    image.save(path, **options)
    return path


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("kind", ["L", "RGB", "RGBA", "P+transparency", "I;16", "F",
                                  "progressive JPEG", "WebP"])
def test_the_estimate_covers_the_measured_peak(tmp_path, kind):
    """Measured at 3000 x 3000 (9 MP): the estimate is at least the peak, and not wildly
    above it (for a progressive JPEG it assumes full-resolution chroma: 2x)."""
    path = _photo(tmp_path, kind, 3000)
    small = tmp_path / "small.png"
    Image.new("RGB", (50, 40)).save(small)
    done = subprocess.run([sys.executable, "-c", PEAK, str(path), "224", "crop", str(small)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    peak, estimate = map(int, done.stdout.split())
    print(f"{kind}: peak {peak / MB:.0f} MB, estimate {estimate / MB:.0f} MB")
    assert peak <= estimate <= 2.2 * peak + 16 * MB, (peak, estimate)


def test_the_estimate_is_read_from_the_header_alone(tmp_path):
    big = tmp_path / "big.png"
    Image.new("L", (8900, 8900)).save(big)
    started = time.perf_counter()
    cost = decode_cost(big, 224, "crop")
    assert time.perf_counter() - started < 0.1  # decoding it takes 0.6 s
    assert cost.decoded == (8900, 8900) and cost.mode == "L" and cost.fitted == (224, 224)
    assert 79 * MB < cost.bytes < 200 * MB
    assert "8900 x 8900 pixels (L) need about" in cost.describe()
    # A JPEG is judged by what draft mode decodes: an eighth of each side here.
    jpeg = tmp_path / "big.jpg"
    Image.new("RGB", (8000, 6000)).save(jpeg, quality=50)
    cost = decode_cost(jpeg, 224, "crop")
    assert cost.decoded == (1000, 750) and cost.bytes < 20 * MB
    assert "decoded at 1000 x 750" in cost.describe()


def test_a_photo_over_the_callers_bound_is_refused_in_words(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGBA", (3000, 3000)).save(path)
    with pytest.raises(UnreadableImage, match=r"too large to decode safely: 3000 x 3000 pixels "
                                              r"\(RGBA\) need about \d+ MB to decode, more "
                                              r"than 50 MB"):
        load_item(path, 32, "crop", max_bytes=50 * MB)
    assert load_item(path, 32, "crop").shape == (32, 32, 3)  # MAX_DECODE_BYTES: 2 GB


@pytest.mark.parametrize("method", ["crop", "pad", "squish"])
@pytest.mark.parametrize("size", [(100_000, 1), (1, 100_000), (65_000, 3), (50_000, 400)])
def test_any_aspect_ratio_becomes_a_square_in_bounded_time(tmp_path, size, method):
    path = tmp_path / "strip.png"
    Image.fromarray(_gradient(*size)).save(path)
    started = time.perf_counter()
    pixels = load_item(path, 224, method)
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8
    assert time.perf_counter() - started < 3  # 100000 x 1 at 224 px for crop: 15 GB before
    cost = decode_cost(path, 224, method)
    assert cost.fitted[0] * cost.fitted[1] <= LONGEST_FIT * 224 * 224
    assert cost.bytes < size[0] * size[1] * 5 + 16 * MB  # the decoding, not the resize


def test_crop_keeps_at_most_eight_squares_of_a_strip_for_training(tmp_path):
    # Training's random square slides along what resize_to_fit kept: the middle eight
    # squares of a longer strip, all of a panorama up to 8:1 (unchanged).
    wide = Image.fromarray(_gradient(10_000, 100))
    kept = resize_to_fit(wide, 32, "crop")
    assert kept.shape == (32, LONGEST_FIT * 32, 3)
    assert fitted_size(10_000, 100, 32, "crop") == (LONGEST_FIT * 32, 32)
    assert fitted_size(100, 10_000, 32, "crop") == (32, LONGEST_FIT * 32)
    panorama = Image.fromarray(_gradient(800, 100))
    assert resize_to_fit(panorama, 32, "crop").shape == (32, 256, 3)
    assert fitted_size(700, 100, 32, "crop") == (224, 32)
    # The centre square is the one the whole strip, resized, would give.
    full = np.asarray(wide.resize((3200, 32), Image.Resampling.BILINEAR, reducing_gap=3.0))
    centre = crop_or_pad(kept, 32, "crop")
    assert np.abs(centre.astype(int) - crop_or_pad(full, 32, "crop")).max() <= 2
    # The training decoder and the cache's room estimate follow the same geometry.
    path = tmp_path / "strip.png"
    Image.new("L", (100_000, 1), 128).save(path)
    decoded = decode_photos([path], 32, "crop", workers=0)
    assert decoded.pixels[0].shape == (32, LONGEST_FIT * 32, 3)
    assert estimate_room([path], 32, "crop").memory_bytes < 1 * MB


def test_grey_and_black_and_white_photos_decode_as_before(tmp_path):
    """Shrinking grey pixels before they become RGB gives the very pixels that shrinking the
    RGB gave (each channel is a copy of the grey)."""
    rng = np.random.default_rng(0)
    for mode in ("L", "1"):
        image = Image.fromarray(rng.integers(0, 256, (1234, 2345), dtype=np.uint8), "L")
        image = image.convert(mode)
        rgb = image.convert("RGB")
        for size, method in [(32, "crop"), (97, "pad"), (224, "squish"), (150, "crop")]:
            new = fitted_size(*rgb.size, size, method)
            expected = np.asarray(rgb.resize(new, Image.Resampling.BILINEAR, reducing_gap=3.0))
            assert np.array_equal(resize_to_fit(image, size, method), expected)


def test_16_and_32_bit_and_float_pixels_are_scaled_as_before():
    """Scaled in place now (one float copy at a time, not four): the same grey levels."""
    rng = np.random.default_rng(0)
    for pixels, mode in [(rng.integers(0, 65535, (300, 500)).astype(np.uint16), "I;16"),
                         (rng.integers(0, 200, (300, 500)).astype(np.int32), "I"),
                         (rng.random((300, 500), dtype=np.float32), "F"),
                         (rng.random((300, 500), dtype=np.float32) * 300, "F")]:
        image = Image.fromarray(pixels)
        assert image.mode == mode
        top = {"F": 1.0 if pixels.max() <= 1 else 255.0}.get(
            mode, 65535.0 if pixels.max() > 255 else 255.0)
        grey = np.clip(pixels.astype(np.float32) * (255.0 / top), 0, 255).round()
        rgb = Image.fromarray(grey.astype(np.uint8), "L").convert("RGB")
        new = fitted_size(500, 300, 32, "crop")
        expected = np.asarray(rgb.resize(new, Image.Resampling.BILINEAR, reducing_gap=3.0))
        assert np.array_equal(resize_to_fit(image, 32, "crop"), expected), mode


def _png_with_exif_after_the_pixels(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(_gradient(60, 40)).save(buffer, format="PNG", exif=exif)
    data, chunks, at = buffer.getvalue(), [], 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        chunks.append((kind, data[at:at + 12 + length]))
        at += 12 + length
    others = [c for k, c in chunks if k != b"eXIf"]
    exif_chunk = next(c for k, c in chunks if k == b"eXIf")
    return data[:8] + b"".join(others[:-1]) + exif_chunk + others[-1]  # before IEND


def test_a_png_turned_by_exif_after_its_pixels_is_judged_turned(tmp_path):
    """Found by walking the chunks, not by decoding (Pillow's getexif decodes a PNG to
    reach an eXIf chunk after the pixels); the turned copy is counted."""
    turned, upright = tmp_path / "turned.png", tmp_path / "upright.png"
    turned.write_bytes(_png_with_exif_after_the_pixels(6))
    upright.write_bytes(_png_with_exif_after_the_pixels(1))
    cost = decode_cost(turned, 32, "crop")
    assert (cost.width, cost.height) == (40, 60) == open_rgb(turned).size
    assert cost.bytes == decode_cost(upright, 32, "crop").bytes + 60 * 40 * 4
