"""What makes a photo worth keeping: it decodes, it is big enough, it is not seen already.

`search` (deciding what to save), `verify` (judging what is on disk) and `clean` apply the same
rules. Pillow must decode the whole file, EXIF orientation and colour mode handled as
training does (`clearclass.data.decode.open_rgb`); the short side must be at least
`MIN_SIDE` pixels; and a photo is a duplicate when its bytes are identical (SHA-256) or its
perceptual hash (imagehash's pHash, 64 bits) differs from one already kept in at most
`NEAR_DUPLICATE_BITS` bits: a resized, re-encoded or recompressed copy.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
from PIL import Image

from clearclass.data.decode import UnreadableImage, open_rgb

MIN_SIDE = 64  # pixels: the shortest side worth training on
# On the 240 demo photos, a copy resized to 60% and saved at JPEG quality 60 differs from its
# original in at most 2 bits, and two different photos in at least 14.
NEAR_DUPLICATE_BITS = 6

# A class with more than this many times the training photos of another is warned about
# (by `explore` and `advise`): the network learns the large class at the small one's expense.
IMBALANCE_RATIO = 3


def imbalance_warning(train_photos: dict[str, int]) -> str | None:
    """A warning when the largest class has more than IMBALANCE_RATIO times the training
    photos of the smallest that has some; None otherwise. `train_photos`: display name ->
    training photos.

    Example:
        print(imbalance_warning({"beagle": 120, "dingo": 30}))
    """
    train = {name: n for name, n in train_photos.items() if n}
    if len(train) < 2:
        return None
    largest, smallest = max(train, key=train.get), min(train, key=train.get)
    if train[largest] <= IMBALANCE_RATIO * train[smallest]:
        return None
    return (f"The classes are imbalanced: {largest} has {train[largest]} training photos, "
            f"{train[largest] / train[smallest]:.1f} times the {train[smallest]} of "
            f"{smallest}. A model learns the large classes at the small ones' expense; "
            "add photos of the small classes where you can, or train with --balance "
            "weights (a loss weighted by class) or --balance sampler (small classes drawn "
            "more often).")


def label_imbalance_warning(train_with: dict[str, int], train_photos: int) -> str | None:
    """Multi-label: a warning when the label on the most training photos is on more than
    IMBALANCE_RATIO times the training photos of the rarest (which is on some), naming each
    rare label's photos with it against those without it; None otherwise. `train_with`:
    display name -> training photos with the label; `train_photos`: all training photos.

    Each label is a yes/no question of its own, so "without it" is every other photo: the
    rare labels are those whose yes is drowned out. --balance draws or weighs one class per
    photo, so the remedy is photos, not an option.

    Example:
        print(label_imbalance_warning({"dog": 120, "cat": 30, "fox": 8}, 150))
    """
    present = {name: n for name, n in train_with.items() if n}
    if len(present) < 2:
        return None
    largest = max(present, key=present.get)
    rare = sorted((name for name, n in present.items()
                   if present[largest] > IMBALANCE_RATIO * n), key=lambda name: present[name])
    if not rare:
        return None
    shown = "; ".join(f"{name} on {present[name]} of {train_photos} "
                      f"({train_photos - present[name]} without it)" for name in rare[:3])
    more = f" and {len(rare) - 3} more" if len(rare) > 3 else ""
    return (f"The labels are imbalanced: {largest} is on {present[largest]} training photos, "
            f"{present[largest] / present[rare[0]]:.1f} times the {present[rare[0]]} of "
            f"{rare[0]}. Rare labels: {shown}{more}. A model learns to leave a rare label out; "
            "add photos that show the rare labels where you can (--balance is for one class "
            "per photo).")


# Pillow's format name -> the extensions that name it; the first is the one files are given.
EXTENSIONS = {
    "JPEG": (".jpg", ".jpeg", ".jfif", ".jpe"),
    "MPO": (".jpg", ".jpeg", ".jfif", ".jpe"),  # a camera's JPEG with extra frames
    "PNG": (".png",),
    "GIF": (".gif",),
    "WEBP": (".webp",),
    "BMP": (".bmp",),
    "TIFF": (".tif", ".tiff"),
}


@dataclass(frozen=True)
class Examined:
    """A decodable photo: its format, size as shown (EXIF applied) and hashes."""

    format: str  # Pillow's name: JPEG, PNG, WEBP, ...
    width: int
    height: int
    sha256: str  # of the file's bytes
    phash: int  # 64-bit perceptual hash

    @property
    def short_side(self) -> int:
        return min(self.width, self.height)

    @property
    def phash_hex(self) -> str:
        return f"{self.phash:016x}"


def examine(data: bytes) -> tuple[Examined, Image.Image]:
    """Decode a photo's bytes and describe it; raises `UnreadableImage` with the reason.

    `rgb` is the upright 8-bit RGB image training would see.

    Example:
        info, rgb = examine(Path("rex.jpg").read_bytes())
        print(info.format, info.width, info.height, rgb.mode)  # e.g. JPEG 500 375 RGB
    """
    rgb = open_rgb(io.BytesIO(data))  # its reasons never name the buffer
    with Image.open(io.BytesIO(data)) as raw:
        fmt = raw.format or "unknown"
    info = Examined(fmt, rgb.width, rgb.height, content_hash(data), perceptual_hash(rgb))
    return info, rgb


def examine_file(path: Path) -> Examined | str:
    """`examine` a file on disk: its description, or why it cannot be used (a string)."""
    try:
        return examine(path.read_bytes())[0]
    except UnreadableImage as e:
        return str(e)
    except OSError as e:
        return f"cannot read the file: {e.strerror or e}"


def content_hash(data: bytes) -> str:
    """SHA-256 of a file's bytes, as hex: `content_hash(b"")` starts with "e3b0c442"."""
    return hashlib.sha256(data).hexdigest()


def perceptual_hash(image: Image.Image) -> int:
    """imagehash's 64-bit pHash as an int: `perceptual_hash(rgb) ^ other` counts differences."""
    return int(str(imagehash.phash(image)), 16)


def canonical_extension(fmt: str) -> str | None:
    """The extension a file of this Pillow format gets, None for formats training skips.

    Example:
        print(canonical_extension("JPEG"), canonical_extension("AVIF"))  # .jpg None
    """
    names = EXTENSIONS.get(fmt)
    return names[0] if names else None


def extension_fits(path: Path, fmt: str) -> bool:
    """Whether `path`'s extension names its content's format (unknown formats always fit).

    Example:
        print(extension_fits(Path("a.jpeg"), "JPEG"), extension_fits(Path("a.jpg"), "PNG"))
        # True False
    """
    names = EXTENSIONS.get(fmt)
    return names is None or path.suffix.lower() in names


@dataclass(frozen=True)
class Match:
    """The photo a new one duplicates: `kind` is "identical" or "near", `bits` the
    perceptual-hash distance, `key` what was stored with it."""

    kind: str
    bits: int
    key: Any


class DuplicateIndex:
    """The photos kept so far, to find a new photo's identical or near twin.

    `find` gives None for a new photo; `add` then remembers it under a key of your choice.

    Example:
        index, (info, _) = DuplicateIndex(), examine(Path("rex.jpg").read_bytes())
        assert index.find(info.sha256, info.phash) is None
        index.add(info.sha256, info.phash, "rex.jpg")
        print(index.find(info.sha256, info.phash))  # Match(kind='identical', bits=0, ...)
    """

    def __init__(self, near_bits: int = NEAR_DUPLICATE_BITS):
        self.near_bits = near_bits
        self._by_sha: dict[str, Any] = {}
        self._hashes = np.empty(256, dtype=np.uint64)
        self._keys: list[Any] = []

    def __len__(self) -> int:
        return len(self._keys)

    def find(self, sha256: str, phash: int | None) -> Match | None:
        if sha256 in self._by_sha:
            return Match("identical", 0, self._by_sha[sha256])
        if phash is None or not self._keys or self.near_bits < 0:
            return None
        bits = _popcount(self._hashes[: len(self._keys)] ^ np.uint64(phash))
        nearest = int(np.argmin(bits))
        if bits[nearest] <= self.near_bits:
            return Match("near", int(bits[nearest]), self._keys[nearest])
        return None

    def add(self, sha256: str, phash: int | None, key: Any) -> None:
        self._by_sha.setdefault(sha256, key)
        if phash is None:
            return
        n = len(self._keys)
        if n == len(self._hashes):
            self._hashes = np.concatenate([self._hashes, np.empty_like(self._hashes)])
        self._hashes[n] = phash
        self._keys.append(key)


_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (numpy >= 2 has it built in)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values)
    return _BYTE_POPCOUNT[values.view(np.uint8)].reshape(-1, 8).sum(axis=1)
