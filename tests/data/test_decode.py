from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from clearclass.data.decode import (
    UnreadableImage,
    crop_or_pad,
    inspect_image,
    load_item,
    open_rgb,
    resize_to_fit,
)
from tests.conftest import make_photo


def test_grayscale_cmyk_rgba_palette_become_rgb(tmp_path):
    gray = make_photo(tmp_path / "gray.jpg", (90, 90, 90), mode="L")
    cmyk = make_photo(tmp_path / "cmyk.jpg", (200, 40, 40), mode="CMYK")
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (20, 10), (255, 0, 0, 0)).save(rgba)  # fully transparent red
    palette = make_photo(tmp_path / "palette.png", (40, 60, 200), mode="P")
    for path in (gray, cmyk, rgba, palette):
        img = open_rgb(path)
        assert img.mode == "RGB", path
    # A CMYK JPEG keeps its colour: red stays red.
    r, g, b = np.asarray(open_rgb(cmyk)).reshape(-1, 3).mean(0)
    assert r > 150 and g < 100 and b < 100
    # Transparency is laid on white, not black.
    assert np.asarray(open_rgb(rgba)).min() == 255


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    ramp = (np.linspace(0, 65535, 64 * 8).reshape(8, 64)).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    pixels = np.asarray(open_rgb(path))
    assert pixels.shape == (8, 64, 3)
    assert pixels.min() == 0 and pixels.max() == 255
    assert 100 < pixels.mean() < 155  # a ramp, not a white image


def test_exif_orientation_is_applied(tmp_path):
    # Stored 60 wide x 20 high, with EXIF saying "rotate 90 degrees": shown 20 x 60.
    pixels = np.zeros((20, 60, 3), dtype=np.uint8)
    pixels[:, :30] = (255, 0, 0)  # left half red
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=95)
    shown = open_rgb(path)
    assert shown.size == (20, 60)
    top = np.asarray(shown)[:10].mean(axis=(0, 1))
    assert top[0] > 200  # the red half is now on top
    width, height, _ = inspect_image(path, 16)
    assert (width, height) == (20, 60)


@pytest.mark.parametrize(("content", "reason"), [
    (b"", "empty file (0 bytes)"),
    (b"this is a text file, not a photo\n", "not an image, or a format Pillow cannot read")])
def test_empty_and_text_files_are_unreadable(tmp_path, content, reason):
    path = tmp_path / "fake.jpg"
    path.write_bytes(content)
    for source in (path, io.BytesIO(content)):
        with pytest.raises(UnreadableImage) as caught:
            open_rgb(source)
        assert str(caught.value) == reason


def test_truncated_jpeg_is_unreadable(tmp_path):
    good = make_photo(tmp_path / "good.jpg", size=(200, 150))
    data = good.read_bytes()
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableImage, match="^truncated: the file ends before the image does$"):
        open_rgb(bad)


def test_reasons_are_words_not_python(tmp_path, monkeypatch):
    """skipped.csv and verify show the reason: no exception names, no buffer addresses."""
    with pytest.raises(UnreadableImage, match="^cannot read the file: Is a directory$"):
        open_rgb(tmp_path)
    # A huge image (a decompression bomb) is refused before its pixels are allocated.
    path = make_photo(tmp_path / "wide.png", size=(64, 64))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(UnreadableImage, match=r"^too many pixels to decode safely \(Image size "
                                              r"\(4096 pixels\) exceeds limit of 2000 pixels\)$"):
        open_rgb(io.BytesIO(path.read_bytes()))
    data = bytearray(make_photo(tmp_path / "p.webp", size=(40, 30)).read_bytes())
    data[20:40] = bytes(20)  # damaged image data after a real header
    with pytest.raises(UnreadableImage) as caught:
        open_rgb(io.BytesIO(bytes(data)))
    assert "Error" not in str(caught.value) and "0x" not in str(caught.value)


def test_draft_mode_never_decodes_below_the_size_needed(tmp_path):
    path = make_photo(tmp_path / "big.jpg", size=(1600, 1200))
    img = open_rgb(path, min_size=224)
    assert min(img.size) >= 224
    assert img.size[0] < 1600  # decoded at a reduced scale
    assert open_rgb(path).size == (1600, 1200)


def test_resize_to_fit_and_crop_or_pad_shapes():
    img = Image.new("RGB", (300, 200), (10, 20, 30))
    crop = resize_to_fit(img, 100, "crop")
    assert crop.shape == (100, 150, 3)
    assert crop_or_pad(crop, 100, "crop").shape == (100, 100, 3)
    assert resize_to_fit(img, 100, "squish").shape == (100, 100, 3)
    pad = resize_to_fit(img, 100, "pad")
    assert pad.shape == (67, 100, 3)
    padded = crop_or_pad(pad, 100, "pad")
    assert padded.shape == (100, 100, 3)
    assert padded[0].max() == 0 and padded[50, 50].tolist() == [10, 20, 30]


def test_crop_position_slides_along_the_long_side():
    pixels = np.zeros((10, 30, 3), dtype=np.uint8)
    pixels[:, :10] = 1
    pixels[:, 20:] = 2
    assert crop_or_pad(pixels, 10, "crop", (0.0, 0.5)).max() == 1
    assert crop_or_pad(pixels, 10, "crop", (1.0, 0.5)).min() == 2
    assert crop_or_pad(pixels, 10, "crop").max() == 0  # centred


def test_load_item_matches_validation_preprocessing(tmp_path):
    path = make_photo(tmp_path / "p.png", size=(90, 60))
    item = load_item(path, 32, "crop")
    assert item.shape == (32, 32, 3) and item.dtype == np.uint8


def test_unicode_path(tmp_path):
    path = make_photo(tmp_path / "чай 茶.jpg")
    assert open_rgb(path).mode == "RGB"
