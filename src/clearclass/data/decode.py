"""Where a file becomes RGB pixels of the size the model wants.

Used alike by training, evaluation, `clearclass predict`, the Python API and `clearclass
serve`, so they all see the same pixels. `item_resize` happens in two steps:
`resize_to_fit` keeps what every epoch needs (the short side at `size` for `crop`), decoded
once; `crop_or_pad` cuts the final square, at a random place in training and in the centre
otherwise, as fastai's `Resize`.

What a photo costs is judged from its header before anything is decoded (`decode_cost`):
the pixels the decoder makes (a large JPEG is decoded at a reduced scale, Pillow's draft
mode) times what each of them costs in memory in its colour mode, plus what the resize
makes. The resize makes little whatever the photo: for `crop`, at most LONGEST_FIT squares
along the long side are kept, taken from the middle of the photo *before* resizing, so a
100000 x 1 strip becomes 8 x 1 squares, not an array of 100000 x `size` rows; for `pad`
and `squish` the output is never larger than size x size. A photo is refused
(UnreadableImage) only when its estimate exceeds the caller's `max_bytes`
(MAX_DECODE_BYTES by default); the server gives its own, smaller, budget.
"""

from __future__ import annotations

import io
import math
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

RESIZE_METHODS = ("crop", "squish", "pad")
NOT_AN_IMAGE = "not an image, or a format Pillow cannot read"
# How Python shows an object without a readable form: Pillow names the buffer it read this way.
_OBJECT_REPR = re.compile(r"\s*'?<[^<>]* object at 0x[0-9a-fA-F]+>'?")
_EXIF_ORIENTATION = 0x0112
_TURNED = (2, 3, 4, 5, 6, 7, 8)  # EXIF orientations that need a flip or a rotation

# crop: `resize_to_fit` keeps at most this many squares along the long side. Training cuts
# its random square anywhere along them, so panoramas up to 8:1 train as before; a longer
# strip keeps its middle 8 squares (at 224 px, 1.2 MB), where a 100000 x 1 one would make
# a 22 million x 224 array (15 GB). Validation and prediction use the centre square, which
# is the same either way.
LONGEST_FIT = 8
# The most memory decoding one photo may take, estimated before decoding (`decode_cost`).
# Pillow's own guard refuses more than 179 million pixels; this refuses fewer only for
# photos with transparency, 32-bit pixels or WebPs (above 120 to 160 million pixels).
# `clearclass serve` gives a smaller budget, shared by all the photos it decodes at once.
MAX_DECODE_BYTES = 2_000_000_000
# Peak bytes per decoded pixel while a photo of this mode becomes RGB: the decoded image
# plus the conversions alive at the same time (Pillow keeps RGB in 4 bytes a pixel).
# Measured as the peak resident memory of `load_item` on 4000 x 4000 photos of each mode
# (tests/robustness/test_decode_cost.py measures some again), rounded up; a palette with a
# transparent colour goes through RGBA.
_BYTES_PER_PIXEL = {"1": 2, "L": 1.5, "P": 5.5, "P+transparency": 13, "RGB": 4.5,
                    "CMYK": 8.5, "YCbCr": 8.5, "LA": 16.5, "PA": 16.5, "RGBA": 12.5,
                    "I;16": 8.5, "I;16B": 8.5, "I;16L": 8.5, "I;16N": 8.5, "I": 12.5,
                    "F": 12.5}
_UNKNOWN_MODE_BYTES = 20
_STORED_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
# libwebp decodes into a buffer of its own (4 bytes a pixel), copied into the image.
_FORMAT_BYTES_PER_PIXEL = {"WEBP": 12}
_REDUCING_GAP = 3.0  # the resize first shrinks by whole factors while 3x above the target


class UnreadableImage(Exception):
    """A file that is not a decodable image; the message is the reason, for skipped.csv."""


def open_rgb(path: str | Path | IO[bytes], min_size: int | None = None) -> Image.Image:
    """Decode an image file to 8-bit RGB, upright as its EXIF orientation says.

    `min_size`: the smallest short side the caller needs. Large JPEGs are then decoded at a
    reduced scale (Pillow's draft mode), several times faster, never below that size.
    """
    return to_rgb(_decode(path, min_size)[0])


def inspect_image(path: str | Path, thumbnail: int) -> tuple[int, int, np.ndarray]:
    """Width and height of a photo as shown (EXIF applied), and a small RGB thumbnail."""
    img, (width, height) = _decode(path, thumbnail)
    img = to_rgb(img)
    img.thumbnail((thumbnail, thumbnail), Image.Resampling.BILINEAR)
    return width, height, np.asarray(img, dtype=np.uint8)


@dataclass(frozen=True)
class DecodeCost:
    """What decoding a photo for the model takes, judged from its header alone."""

    width: int  # as shown (EXIF orientation applied)
    height: int
    mode: str  # Pillow's colour mode of the decoded pixels
    decoded: tuple[int, int]  # what the decoder makes (a JPEG in draft mode: less)
    fitted: tuple[int, int]  # what `resize_to_fit` makes of it
    bytes: int  # estimated peak memory of decoding, converting and resizing it

    @property
    def decoded_pixels(self) -> int:
        return self.decoded[0] * self.decoded[1]

    def describe(self) -> str:
        """e.g. "8900 x 8900 pixels (RGBA) need about 950 MB to decode"."""
        shown = f"{self.width} x {self.height} pixels"
        if self.decoded_pixels < self.width * self.height:
            shown += f", decoded at {self.decoded[0]} x {self.decoded[1]}"
        return f"{shown} ({self.mode}) need about {_megabytes(self.bytes)} to decode"


def decode_cost(source: str | Path | IO[bytes], size: int, method: str) -> DecodeCost:
    """What `load_item(source, size, method)` will take, from the header only.

    Raises UnreadableImage for a file whose header cannot be read (the reason says why).
    """
    cost = None

    def judge(found: DecodeCost) -> None:
        nonlocal cost
        cost = found
        raise _Judged

    try:
        _decode(source, size, fit=(size, method), judge=judge)
    except _Judged:
        pass
    finally:
        _rewind(source)
    assert cost is not None
    return cost


class _Judged(Exception):
    """Raised by `decode_cost`'s judge to stop before the pixels are decoded."""


def _decode(source: str | Path | IO[bytes], min_size: int | None,
            fit: tuple[int, str] | None = None, judge=None) -> tuple[Image.Image, tuple[int, int]]:
    """The upright image in the mode it was stored in, and its size as shown.

    `judge(DecodeCost)` is called between reading the header and decoding the pixels
    (needs `fit`, the size and method they are for); it may raise to refuse the photo.
    """
    if _is_empty(source):  # Pillow would call it "not an image", which hides the cause
        raise UnreadableImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow warns on odd metadata (e.g. "Corrupt EXIF data") that does not hurt pixels.
            warnings.simplefilter("ignore")
            with Image.open(source) as img:
                stored, orientation = img.size, _orientation(img)
                if min_size and img.format == "JPEG":
                    img.draft("RGB", (min_size, min_size))
                if judge is not None:
                    judge(_cost(img, _upright_size(stored, orientation), orientation, *fit))
                img.load()
                shown = _upright_size(stored, orientation)
                if orientation in _TURNED:
                    img = ImageOps.exif_transpose(img)
                return img, shown
    except (UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise UnreadableImage(_reason(e)) from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        # Pillow reports truncated and corrupt data as OSError, ValueError or SyntaxError.
        raise UnreadableImage(_reason(e)) from None


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation, read without decoding the pixels."""
    if img.format == "PNG" and "exif" not in img.info:
        # A PNG may keep its EXIF after the pixels, where Pillow's `getexif` decodes them
        # to reach it: walk the chunk headers instead, seeking past the pixel data.
        return _png_orientation(img.fp)
    return img.getexif().get(_EXIF_ORIENTATION, 1)


def _png_orientation(fp: IO[bytes]) -> int:
    here = fp.tell()
    try:
        fp.seek(8)  # the PNG signature
        while len(head := fp.read(8)) == 8:
            length, kind = struct.unpack(">I4s", head)
            if kind == b"eXIf":
                data = fp.read(length)
                exif = Image.Exif()
                exif.load(data if data.startswith(b"Exif\x00\x00") else b"Exif\x00\x00" + data)
                return exif.get(_EXIF_ORIENTATION, 1)
            if kind == b"IEND":
                break
            fp.seek(length + 4, io.SEEK_CUR)  # the data and its CRC
    except (OSError, ValueError, SyntaxError, struct.error):
        pass  # decoding says what is wrong with the file
    finally:
        fp.seek(here)
    return 1


def _upright_size(stored: tuple[int, int], orientation: int) -> tuple[int, int]:
    """Width and height as shown, from the stored ones."""
    return (stored[1], stored[0]) if orientation in (5, 6, 7, 8) else stored


def _cost(img: Image.Image, shown: tuple[int, int], orientation: int, size: int,
          method: str) -> DecodeCost:
    """The DecodeCost of an opened, not yet decoded, image (draft mode already chosen)."""
    decoded = img.size[0] * img.size[1]
    mode = "P+transparency" if img.mode == "P" and "transparency" in img.info else img.mode
    per_pixel = _BYTES_PER_PIXEL.get(mode, _UNKNOWN_MODE_BYTES)
    total = int(decoded * (per_pixel + _FORMAT_BYTES_PER_PIXEL.get(img.format, 0)))
    if orientation in _TURNED:  # the turned copy, in the same mode
        total += decoded * _STORED_BYTES.get(img.mode, 4)
    if img.format == "JPEG" and "progressive" in img.info:
        # libjpeg keeps every DCT coefficient of a progressive JPEG until its last scan: 2
        # bytes a sample, at full scale even in draft mode.
        total += shown[0] * shown[1] * 2 * len(img.getbands())
    fitted = fitted_size(*shown, size, method)
    total += fitted[0] * fitted[1] * 8 + 8_000_000  # the resized copy, its array, buffers
    return DecodeCost(shown[0], shown[1], img.mode, img.size, fitted, total)


def _megabytes(count: int) -> str:
    return f"{max(1, round(count / 1_000_000)):,} MB"


def _rewind(source: str | Path | IO[bytes]) -> None:
    """Put a file object back at its start, for the decoding that follows its judging."""
    if hasattr(source, "seek"):
        source.seek(0)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB; transparency is laid on white, as on a page."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # convert("L") would clip 16-bit values to 255 (a white image); scale them instead.
        # In place: one float copy of the photo at a time, not four.
        pixels = np.array(img, dtype=np.float32)  # a copy of its own, written in place
        if img.mode == "F":
            top = 1.0 if pixels.max(initial=0) <= 1.0 else 255.0
        else:
            top = 65535.0 if pixels.max(initial=0) > 255 else 255.0
        pixels *= 255.0 / top
        np.clip(pixels, 0, 255, out=pixels)
        gray = np.round(pixels, out=pixels).astype(np.uint8)
        del pixels
        return Image.fromarray(gray, "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        laid = Image.alpha_composite(white, rgba)
        del white, rgba  # before the RGB copy is made
        return laid.convert("RGB")
    return img.convert("RGB")


def resize_to_fit(img: Image.Image, size: int, method: str) -> np.ndarray:
    """Resize so that `crop_or_pad` can cut a size x size square: HxWx3 uint8.

    crop: short side to `size`, aspect kept (the crop slides along the long side), at most
    LONGEST_FIT squares long (the middle of a longer strip); pad: long side to `size`,
    aspect kept; squish: exactly size x size. `img` may be in any mode: a grey photo is
    shrunk before it becomes RGB (the same pixels as shrinking the RGB, a third of the
    memory).
    """
    new = fitted_size(*img.size, size, method)
    box = fitted_box(*img.size, size, method)
    if img.mode in ("1", "L"):
        # RGB from grey copies the value into each channel, so reducing first is exact.
        img, box = _reduce(img.convert("L") if img.mode == "1" else img, new, box)
    img = to_rgb(img)
    img, box = _reduce(img, new, box)
    if new != img.size or box != (0, 0, *img.size):
        img = img.resize(new, Image.Resampling.BILINEAR, box=box)
    return np.asarray(img, dtype=np.uint8)


def _reduce(img: Image.Image, new: tuple[int, int],
            box: tuple[float, float, float, float]) -> tuple[Image.Image, tuple]:
    """The first step of Pillow's `resize(new, BILINEAR, box, reducing_gap=3.0)`: shrink by
    whole factors (`Image.reduce`, a box average) while the rest stays 3x larger than
    `new`. Done here so that it can run before a conversion to RGB; the box returned is
    `box` on the reduced image."""
    fx = int((box[2] - box[0]) / new[0] / _REDUCING_GAP) or 1
    fy = int((box[3] - box[1]) / new[1] / _REDUCING_GAP) or 1
    if fx == 1 and fy == 1:
        return img, box
    # The pixels the bilinear filter reaches around the box (its support: 1 output pixel).
    sx, sy = 0.5 * (box[2] - box[0]) / new[0], 0.5 * (box[3] - box[1]) / new[1]
    near = (max(0, int(box[0] - sx)), max(0, int(box[1] - sy)),
            min(img.size[0], math.ceil(box[2] + sx)), min(img.size[1], math.ceil(box[3] + sy)))
    reduced = img.reduce((fx, fy), box=near)
    return reduced, ((box[0] - near[0]) / fx, (box[1] - near[1]) / fy,
                     (box[2] - near[0]) / fx, (box[3] - near[1]) / fy)


def fitted_size(width: int, height: int, size: int, method: str) -> tuple[int, int]:
    """(width, height) of what `resize_to_fit` makes of a width x height image.

    Also how the cache's room is estimated from photo headers, without decoding them.
    """
    if method == "squish":
        return size, size
    if method == "crop":
        scale = size / min(width, height)
        longest = LONGEST_FIT * size
        return (min(longest, max(size, round(width * scale))),
                min(longest, max(size, round(height * scale))))
    if method == "pad":
        scale = size / max(width, height)
        return (max(1, min(size, round(width * scale))),
                max(1, min(size, round(height * scale))))
    raise ValueError(f"resize method must be one of {RESIZE_METHODS}; got {method!r}")


def fitted_box(width: int, height: int, size: int,
               method: str) -> tuple[float, float, float, float]:
    """The part of a width x height image that `resize_to_fit` resizes: all of it, except
    for `crop` of a strip longer than LONGEST_FIT squares, whose middle is cut out first."""
    box = (0, 0, width, height)
    if method != "crop":
        return box
    fitted_w, fitted_h = fitted_size(width, height, size, method)
    short = min(width, height)
    if fitted_w == LONGEST_FIT * size and width > LONGEST_FIT * short:
        left = (width - LONGEST_FIT * short) / 2
        box = (left, 0, left + LONGEST_FIT * short, height)
    elif fitted_h == LONGEST_FIT * size and height > LONGEST_FIT * short:
        top = (height - LONGEST_FIT * short) / 2
        box = (0, top, width, top + LONGEST_FIT * short)
    return box


def crop_or_pad(
    pixels: np.ndarray, size: int, method: str, position: tuple[float, float] = (0.5, 0.5)
) -> np.ndarray:
    """Cut (or pad to) a size x size square from `resize_to_fit`'s output.

    `position` (x, y) in [0, 1] places the square: (0.5, 0.5) is the centre; training
    draws it at random, as fastai's `Resize` does. Padding is black.
    """
    h, w = pixels.shape[:2]
    if h == size and w == size:
        return pixels
    if method == "pad":
        out = np.zeros((size, size, 3), dtype=np.uint8)
        top, left = int(position[1] * (size - h)), int(position[0] * (size - w))
        out[top : top + h, left : left + w] = pixels
        return out
    top, left = int(position[1] * (h - size)), int(position[0] * (w - size))
    return pixels[top : top + size, left : left + size]


def load_item(path: str | Path | IO[bytes], size: int, method: str,
              max_bytes: int | None = MAX_DECODE_BYTES) -> np.ndarray:
    """The validation-time pixels of one photo: size x size x 3 uint8, centred.

    A photo whose decoding would take more than `max_bytes` (estimated from its header,
    `decode_cost`) raises UnreadableImage before anything is decoded; None: no limit.
    """
    def judge(cost: DecodeCost) -> None:
        if max_bytes is not None and cost.bytes > max_bytes:
            raise UnreadableImage(too_costly(cost, max_bytes))

    img = _decode(path, size, fit=(size, method), judge=judge)[0]
    return crop_or_pad(resize_to_fit(img, size, method), size, method)


def too_costly(cost: DecodeCost, max_bytes: int) -> str:
    """The reason a photo is refused for the memory it would take."""
    return f"too large to decode safely: {cost.describe()}, more than {_megabytes(max_bytes)}"


def _is_empty(source: str | Path | IO[bytes]) -> bool:
    if isinstance(source, io.BytesIO):
        return source.getbuffer().nbytes == 0
    if isinstance(source, (str, Path)):
        try:
            return Path(source).stat().st_size == 0
        except OSError:
            return False  # Image.open says why
    return False


def _reason(error: BaseException) -> str:
    """Why a file did not decode, in words for skipped.csv: never Pillow's name for the buffer
    it read (`<_io.BytesIO object at 0x...>`) nor a Python exception's name."""
    text = _OBJECT_REPR.sub("", str(error).strip().splitlines()[0] if str(error).strip() else "")
    text = text.strip(" :.")
    if isinstance(error, UnidentifiedImageError):
        return NOT_AN_IMAGE
    if isinstance(error, Image.DecompressionBombError):
        return f"too many pixels to decode safely ({text.split(', could be')[0]})"
    if isinstance(error, OSError) and error.errno is not None:
        return f"cannot read the file: {error.strerror or text}"
    if isinstance(error, EOFError) or "truncated" in text.lower():
        return "truncated: the file ends before the image does"
    return "damaged image data" + (f" ({text})" if text else "")
