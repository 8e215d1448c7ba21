"""Property tests of the readers of what users give: the labels CSV and the image decoder.

Whatever the bytes, `find_photos` returns a PhotoSet or raises `DataError`, and the decoder
returns RGB pixels of the size asked or raises `UnreadableImage`: never another exception,
which the command line would show as a traceback.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from clearclass.data.decode import UnreadableImage, load_item, open_rgb
from clearclass.data.sources import PhotoSet, find_photos
from clearclass.errors import DataError
from tests.conftest import make_dataset, make_photo

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
FORMATS = ("jpg", "png", "gif", "webp", "bmp", "tif")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Photos a CSV can name (red/000.jpg ... blue/003.jpg), and room for the files tried."""
    root = tmp_path_factory.mktemp("readers")
    make_dataset(root, per_class=4)
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, bytes]:
    """A small real photo in each format training reads."""
    root = tmp_path_factory.mktemp("formats")
    return {fmt: make_photo(root / f"photo.{fmt}", size=(40, 30), seed=3).read_bytes()
            for fmt in FORMATS}


def read_csv(path: Path, data: bytes) -> PhotoSet | None:
    path.write_bytes(data)
    try:
        return find_photos(path)
    except DataError as e:
        assert "\n" not in str(e)  # the command line shows it as one line
        return None


PHOTOS = [f"{c}/{i:03d}.jpg" for c in ("red", "green", "blue") for i in range(4)]
cells = st.one_of(st.sampled_from(PHOTOS + ["red", "missing.jpg", "", " ", "True", "0"]),
                  st.text(max_size=12))
headers = st.lists(st.sampled_from(["path", "label", "is_valid", " Path ", "LABEL", "x", ""]),
                   min_size=1, max_size=4)


@SETTINGS
@given(data=st.binary(max_size=600))
def test_any_bytes_as_a_csv_give_photos_or_a_data_error(folder, data):
    read_csv(folder / "bytes.csv", data)


@SETTINGS
@given(header=headers, rows=st.lists(st.lists(cells, max_size=5), max_size=8),
       delimiter=st.sampled_from([",", "\t", ";"]),
       encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "cp1252"]))
def test_any_rows_as_a_csv_give_photos_or_a_data_error(folder, header, rows, delimiter,
                                                       encoding):
    text = "\n".join(delimiter.join(row) for row in [header, *rows]) + "\n"
    data = text.encode(encoding, errors="replace")
    read_csv(folder / "rows.csv", data)


@SETTINGS
@given(order=st.permutations(PHOTOS), delimiter=st.sampled_from([",", "\t", ";"]),
       encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be",
                                 "cp1252"]),
       newline=st.sampled_from(["\n", "\r\n"]), split=st.booleans())
def test_a_good_table_reads_the_same_however_a_spreadsheet_saved_it(
        folder, order, delimiter, encoding, newline, split):
    header = ["Path", "Label"] + (["is_valid"] if split else [])
    rows = [[p, p.split("/")[0]] + ([str(i % 4 == 0)] if split else [])
            for i, p in enumerate(order)]
    text = newline.join(delimiter.join(r) for r in [header, *rows]) + newline
    photos = read_csv(folder / "good.csv", text.encode(encoding))
    assert photos is not None
    assert sorted(p.path for p in photos.photos) == sorted(folder / p for p in PHOTOS)
    assert all(p.path.parent.name == p.class_id for p in photos.photos)
    assert photos.valid and all(c[0] for c in photos.counts().values())


def check_decoder(path: Path, data: bytes) -> None:
    """open_rgb and load_item give RGB of the right size, or raise UnreadableImage."""
    path.write_bytes(data)
    try:
        img = open_rgb(path)
    except UnreadableImage as e:
        assert str(e) and "object at 0x" not in str(e)
    else:
        assert isinstance(img, Image.Image) and img.mode == "RGB"
        assert img.width > 0 and img.height > 0
    for method in ("crop", "pad"):
        try:
            pixels = load_item(path, 16, method)
        except UnreadableImage:
            continue
        assert isinstance(pixels, np.ndarray)
        assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8


@SETTINGS
@given(data=st.binary(max_size=2000))
def test_any_bytes_decode_or_are_unreadable(folder, data):
    check_decoder(folder / "any.jpg", data)


@SETTINGS
@given(fmt=st.sampled_from(FORMATS), cut=st.floats(0, 1), garbage=st.binary(max_size=200))
def test_a_real_header_then_garbage_or_an_early_end(folder, images, fmt, cut, garbage):
    real = images[fmt]
    check_decoder(folder / f"cut.{fmt}", real[: int(len(real) * cut)] + garbage)


@SETTINGS
@given(fmt=st.sampled_from(FORMATS), seed=st.integers(0, 2**32 - 1),
       flips=st.integers(1, 20))
def test_a_real_photo_with_damaged_bytes(folder, images, fmt, seed, flips):
    data = bytearray(images[fmt])
    rng = random.Random(seed)
    for _ in range(flips):
        data[rng.randrange(len(data))] = rng.randrange(256)
    check_decoder(folder / f"flipped.{fmt}", bytes(data))


def test_an_image_buffer_is_never_named_in_a_reason():
    with pytest.raises(UnreadableImage) as caught:
        open_rgb(io.BytesIO(b"not a photo"))
    assert str(caught.value) == "not an image, or a format Pillow cannot read"
