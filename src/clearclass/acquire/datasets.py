"""`clearclass download imagewoof|imagenette|stanford-dogs`: public datasets, ready to train.

Each archive is downloaded with a progress bar into `<file>.part`, resumed where an earlier
download stopped (`HttpClient.download_file`), checked against its published MD5 (fastai's
archives) or byte size (Stanford Dogs), unpacked safely (`archives.unpack`), and removed
unless `keep_archives`. The dataset's official split is kept and written as `labels.csv`
(`path,label,is_valid`), which `clearclass train` reads:
- Imagenette and Imagewoof (fastai): `train/<wnid>/` and `val/<wnid>/`; the labels name
  each class `<wnid>-<name>` (shown as the name);
- Stanford Dogs: `Images/<wnid>-<breed>/`, split by `train_list.mat` and `test_list.mat`
  (12,000 training and 8,580 test photos).
Base URLs can be replaced with CLEARCLASS_FASTAI_URL and CLEARCLASS_STANFORD_DOGS_URL.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from clearclass import fileio
from clearclass.acquire import http
from clearclass.acquire.archives import unpack
from clearclass.acquire.http import HttpClient
from clearclass.data.sources import is_image_file
from clearclass.errors import AcquireError
from clearclass.progress import say

FASTAI_URL = "https://s3.amazonaws.com/fast-ai-imageclas"
STANFORD_DOGS_URL = "http://vision.stanford.edu/aditya86/ImageNetDogs"
SIZES = ("full", "320", "160")  # fastai's releases: originals, short side 320 or 160 px
DATASETS = ("imagewoof", "imagenette", "stanford-dogs")
LABELS = "labels.csv"


@dataclass(frozen=True)
class Archive:
    """A published file: its name, size in bytes and MD5 where they are published."""

    file: str
    size: int | None = None
    md5: str | None = None


# fastai/data/download_checks.py (fastai 2.8.12)
FASTAI_ARCHIVES = {
    ("imagenette", "full"): Archive("imagenette2.tgz", 1557161267,
                                    "2c774ecb40005b35d7937d50f5d42336"),
    ("imagenette", "320"): Archive("imagenette2-320.tgz", 341663724,
                                   "1f1f74f133caff120e575856659b87a2"),
    ("imagenette", "160"): Archive("imagenette2-160.tgz", 99003388,
                                   "c475f8f7617a200ba35b9facc48443c3"),
    ("imagewoof", "full"): Archive("imagewoof2.tgz", 1343715595,
                                   "2cc1c1e36e20cb6fd24ffb978edcb487"),
    ("imagewoof", "320"): Archive("imagewoof2-320.tgz", 328387740,
                                  "7a1fd92672a559a85de76e4810a20c21"),
    ("imagewoof", "160"): Archive("imagewoof2-160.tgz", 92612825,
                                  "3559b194123981a540b87132dbda412f"),
}
# Sizes from tensorflow_datasets' url_checksums/stanford_dogs.txt; no MD5 is published.
STANFORD_DOGS_ARCHIVES = (
    Archive("images.tar", 793579520),
    Archive("annotation.tar", 21852160),
    Archive("lists.tar", 481280),
)

# ImageNet class names of the fastai subsets, as Stanford Dogs names its folders.
CLASS_NAMES = {
    "n02086240": "Shih-Tzu", "n02087394": "Rhodesian_ridgeback", "n02088364": "beagle",
    "n02089973": "English_foxhound", "n02093754": "Border_terrier",
    "n02096294": "Australian_terrier", "n02099601": "golden_retriever",
    "n02105641": "Old_English_sheepdog", "n02111889": "Samoyed", "n02115641": "dingo",
    "n01440764": "tench", "n02102040": "English_springer", "n02979186": "cassette_player",
    "n03000684": "chain_saw", "n03028079": "church", "n03394916": "French_horn",
    "n03417042": "garbage_truck", "n03425413": "gas_pump", "n03445777": "golf_ball",
    "n03888605": "parachute",
}


@dataclass
class DatasetDownload:
    """Where a downloaded dataset is, and what to give `clearclass train`."""

    name: str
    folder: Path
    train_on: Path | None  # None when no layout clearclass reads was recognised
    layout: str  # in words, for the user
    classes: int = 0
    train: int = 0
    valid: int = 0


def download_dataset(
    name: str,
    size: str = "320",
    out: str | Path = "data",
    keep_archives: bool = False,
    timeout: float = http.TIMEOUT,
    retries: int = http.RETRIES,
) -> DatasetDownload:
    """Download a public dataset into `out`, unpack it and write its official split.

    For example, `download_dataset("imagewoof", size="320", out="data")` gives
    data/imagewoof2-320/ with labels.csv; train with `clearclass train
    data/imagewoof2-320/labels.csv`. `size` applies to imagewoof and imagenette.
    """
    key = name.strip().lower()
    if key not in DATASETS:
        raise AcquireError(f"Unknown dataset {name!r}; choose one of {', '.join(DATASETS)} (or "
                           "`clearclass download kaggle OWNER/DATASET`).")
    size = str(size).strip().lower()
    if key != "stanford-dogs" and size not in SIZES:
        raise AcquireError(f"Unknown size {size!r} for {key}; choose one of {', '.join(SIZES)} "
                           "(full: the originals; 320 and 160: the short side in pixels).")
    out = fileio.output_folder(out)
    client = HttpClient(timeout=timeout, retries=retries)
    try:
        if key == "stanford-dogs":
            result = _stanford_dogs(client, out, keep_archives)
        else:
            result = _fastai(client, key, size, out, keep_archives)
    finally:
        client.close()
    say(f"{result.name}: {result.classes} classes, {result.train} training and {result.valid} "
        f"validation photos ({result.layout}).")
    say(f"Next: clearclass train {result.train_on}")
    return result


def _fastai(client: HttpClient, name: str, size: str, out: Path, keep: bool) -> DatasetDownload:
    archive = FASTAI_ARCHIVES[(name, size)]
    folder = out / archive.file.removesuffix(".tgz")
    if folder.is_dir():
        say(f"{folder} is already there; not downloading it again.")
    else:
        base = os.environ.get("CLEARCLASS_FASTAI_URL", FASTAI_URL).rstrip("/")
        path = _fetch(client, f"{base}/{archive.file}", out / archive.file, archive)
        unpack([path], folder, strip_single_folder=True)
        if not keep:
            path.unlink()
    rows = []
    for split, is_valid in (("train", False), ("val", True)):
        split_dir = folder / split
        if not split_dir.is_dir():
            raise AcquireError(f"{folder} has no {split}/ folder; the archive is not laid out "
                               "as fastai publishes it. Remove the folder and download again.")
        for class_dir in sorted(d for d in split_dir.iterdir() if d.is_dir()):
            class_id = f"{class_dir.name}-{CLASS_NAMES[class_dir.name]}" \
                if class_dir.name in CLASS_NAMES else class_dir.name
            rows += [(f"{split}/{class_dir.name}/{f.name}", class_id, is_valid)
                     for f in sorted(class_dir.iterdir()) if f.is_file() and is_image_file(f)]
    return _with_labels(f"{name} ({size})", folder, rows,
                        "the official split: train/ for training, val/ for validation")


def _stanford_dogs(client: HttpClient, out: Path, keep: bool) -> DatasetDownload:
    folder = out / "stanford-dogs"
    if folder.is_dir():
        say(f"{folder} is already there; not downloading it again.")
    else:
        base = os.environ.get("CLEARCLASS_STANFORD_DOGS_URL", STANFORD_DOGS_URL).rstrip("/")
        paths = [_fetch(client, f"{base}/{a.file}", out / f"stanford-dogs-{a.file}", a)
                 for a in STANFORD_DOGS_ARCHIVES]
        unpack(paths, folder)
        if not keep:
            for path in paths:
                path.unlink()
    rows = []
    for mat, is_valid in (("train_list.mat", False), ("test_list.mat", True)):
        for rel in _mat_file_list(folder / mat):
            rows.append((f"Images/{rel}", rel.split("/")[0], is_valid))
    missing = [r[0] for r in rows if not (folder / r[0]).is_file()]
    if missing:
        raise AcquireError(f"{len(missing)} photo(s) listed in {folder}'s split files are not "
                           f"in {folder / 'Images'}, e.g. {missing[0]}. Remove {folder} and "
                           "download again.")
    return _with_labels("stanford-dogs", folder, rows,
                        "the official split: train_list.mat for training, test_list.mat for "
                        "validation")


def _with_labels(name: str, folder: Path, rows: list[tuple[str, str, bool]],
                 layout: str) -> DatasetDownload:
    labels_csv = fileio.write_csv(folder / LABELS, ("path", "label", "is_valid"), rows)
    return DatasetDownload(name, folder, labels_csv, layout, classes=len({r[1] for r in rows}),
                           train=sum(1 for r in rows if not r[2]),
                           valid=sum(1 for r in rows if r[2]))


def _fetch(client: HttpClient, url: str, dest: Path, archive: Archive) -> Path:
    """The archive at `dest`, downloaded (or resumed) unless already there and checked."""
    if not dest.is_file():
        say(f"Downloading {url}" + (f" ({archive.size / 1e6:,.0f} MB)" if archive.size else ""))
        client.download_file(url, dest, size=archive.size)
    elif archive.size is not None and dest.stat().st_size != archive.size:
        got = dest.stat().st_size
        dest.unlink()
        raise AcquireError(f"{dest} has {got:,} bytes, not the published {archive.size:,}; it "
                           "was removed. Run the command again to download it afresh.")
    if archive.md5:
        got = _md5(dest)
        if got != archive.md5:
            dest.unlink()
            raise AcquireError(
                f"{dest.name} from {url} has MD5 {got}, but {archive.md5} is published: the "
                "download is damaged or not the published file. It was removed; run the "
                "command again to download it afresh.")
    return dest


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _mat_file_list(path: Path) -> list[str]:
    """The `file_list` of a Stanford Dogs split file: paths relative to Images/."""
    from scipy.io import loadmat

    if not path.is_file():
        raise AcquireError(f"{path} is missing: lists.tar did not unpack as published. Remove "
                           f"{path.parent} and download again.")
    try:
        cells = loadmat(str(path))["file_list"]
    except (KeyError, ValueError, OSError) as e:
        raise AcquireError(f"{path} cannot be read as a split file ({e}). Remove "
                           f"{path.parent} and download again.") from None
    return [str(cell.ravel()[0]) for cell in cells.ravel()]
