"""Where a file becomes RGB pixels of the size the model wants.

Used alike by training, evaluation and prediction, so the three see the same pixels.
`item_resize` happens in two steps: `resize_to_fit` keeps what every epoch needs
(the short side at `size` for `crop`), decoded once; `crop_or_pad` cuts the final
square, at a random place in training and in the centre otherwise, as fastai's `Resize`.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

RESIZE_METHODS = ("crop", "squish", "pad")
NOT_AN_IMAGE = "not an image, or a format Pillow cannot read"
# How Python shows an object without a readable form: Pillow names the buffer it read this way.
_OBJECT_REPR = re.compile(r"\s*'?<[^<>]* object at 0x[0-9a-fA-F]+>'?")
_EXIF_ORIENTATION = 0x0112


class UnreadableImage(Exception):
    """A file that is not a decodable image; the message is the reason, for skipped.csv."""


def open_rgb(path: str | Path | IO[bytes], min_size: int | None = None) -> Image.Image:
    """Decode an image file to 8-bit RGB, upright as its EXIF orientation says.

    `min_size`: the smallest short side the caller needs. Large JPEGs are then decoded at a
    reduced scale (Pillow's draft mode), several times faster, never below that size.
    """
    return _decode(path, min_size)[0]


def inspect_image(path: str | Path, thumbnail: int) -> tuple[int, int, np.ndarray]:
    """Width and height of a photo as shown (EXIF applied), and a small RGB thumbnail."""
    img, (width, height) = _decode(path, thumbnail)
    img.thumbnail((thumbnail, thumbnail), Image.Resampling.BILINEAR)
    return width, height, np.asarray(img, dtype=np.uint8)


def _decode(path: str | Path | IO[bytes],
            min_size: int | None) -> tuple[Image.Image, tuple[int, int]]:
    if _is_empty(path):  # Pillow would call it "not an image", which hides the cause
        raise UnreadableImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow warns on odd metadata (e.g. "Corrupt EXIF data") that does not hurt pixels.
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                width, height = img.size
                if img.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
                    width, height = height, width  # shown rotated by 90 degrees
                if min_size and img.format == "JPEG":
                    img.draft("RGB", (min_size, min_size))
                img.load()
                img = ImageOps.exif_transpose(img)
                return to_rgb(img), (width, height)
    except (UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise UnreadableImage(_reason(e)) from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        # Pillow reports truncated and corrupt data as OSError, ValueError or SyntaxError.
        raise UnreadableImage(_reason(e)) from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB; transparency is laid on white, as on a page."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # convert("L") would clip 16-bit values to 255 (a white image); scale them instead.
        pixels = np.asarray(img, dtype=np.float32)
        top = 65535.0 if pixels.max(initial=0) > 255 else 255.0
        gray = np.clip(pixels * (255.0 / top), 0, 255).round().astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if img.mode == "F":
        pixels = np.asarray(img, dtype=np.float32)
        top = 1.0 if pixels.max(initial=0) <= 1.0 else 255.0
        gray = np.clip(pixels * (255.0 / top), 0, 255).round().astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def resize_to_fit(img: Image.Image, size: int, method: str) -> np.ndarray:
    """Resize so that `crop_or_pad` can cut a size x size square: HxWx3 uint8.

    crop: short side to `size`, aspect kept (the crop slides along the long side);
    pad: long side to `size`, aspect kept; squish: exactly size x size.
    """
    new = fitted_size(*img.size, size, method)
    if new != img.size:
        img = img.resize(new, Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(img, dtype=np.uint8)


def fitted_size(width: int, height: int, size: int, method: str) -> tuple[int, int]:
    """(width, height) of what `resize_to_fit` makes of a width x height image.

    Also how the cache's room is estimated from photo headers, without decoding them.
    """
    if method == "squish":
        return size, size
    if method == "crop":
        scale = size / min(width, height)
        return max(size, round(width * scale)), max(size, round(height * scale))
    if method == "pad":
        scale = size / max(width, height)
        return (max(1, min(size, round(width * scale))),
                max(1, min(size, round(height * scale))))
    raise ValueError(f"resize method must be one of {RESIZE_METHODS}; got {method!r}")


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


def load_item(path: str | Path, size: int, method: str) -> np.ndarray:
    """The validation-time pixels of one photo: size x size x 3 uint8, centred."""
    return crop_or_pad(resize_to_fit(open_rgb(path, min_size=size), size, method), size, method)


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
