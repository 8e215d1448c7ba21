"""`clearclass download kaggle OWNER/DATASET`: a Kaggle dataset, unpacked, with the folder
to train on named.

The download goes through the `kaggle` package, whose credentials are, in its order: an
access token (KAGGLE_API_TOKEN, or ~/.kaggle/access_token), then the legacy username and
key (kaggle.json in the config folder, or KAGGLE_USERNAME and KAGGLE_KEY), then the OAuth
login of `kaggle auth login`. The config folder is KAGGLE_CONFIG_DIR, else ~/.kaggle (on
Linux ~/.config/kaggle when ~/.kaggle does not exist). kaggle 2.x prints a help text and
calls `exit(1)` when it finds no credentials; here that becomes one `CredentialsError`.

`import kaggle` tries to authenticate (and creates the config folder), so the package is
imported only here, when a download is asked for, with its printing silenced.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clearclass import fileio
from clearclass.acquire.archives import unpack
from clearclass.acquire.datasets import DatasetDownload
from clearclass.acquire.http import redact, register_secret
from clearclass.data.sources import VALID_FOLDER_NAMES, is_image_file
from clearclass.errors import AcquireError, CredentialsError
from clearclass.progress import console, enabled, say, warn

TOKEN_PAGE = "https://www.kaggle.com/settings"
_DATASET = re.compile(r"^(?:https?://)?(?:www\.)?(?:kaggle\.com/datasets/)?"
                      r"(?P<owner>[\w.-]+)/(?P<slug>[\w.-]+)/?(?:versions/\d+)?$")


def download_kaggle(
    dataset: str,
    out: str | Path = "data",
    keep_archives: bool = False,
) -> DatasetDownload:
    """Download a Kaggle dataset into `out/<dataset-name>/` and say what to train on.

    For example, `download_kaggle("jessicali9530/stanford-dogs-dataset", out="data")` gives
    data/stanford-dogs-dataset/ and names data/stanford-dogs-dataset/images/Images as the
    folder to train on. A URL of the dataset's page works too.
    """
    owner, slug = _parse(dataset)
    out = Path(out).expanduser()
    folder = out / slug
    if folder.is_dir() and any(folder.iterdir()):
        say(f"{folder} is already there; not downloading it again.")
    else:
        api = _authenticated_api()
        fileio.output_folder(out)
        say(f"Downloading {owner}/{slug} from Kaggle into {out} ...")
        archive = _download(api, owner, slug, out)
        unpack([archive], folder)
        if not keep_archives:
            archive.unlink()
    result = describe_layout(f"{owner}/{slug}", folder)
    say(result.layout)
    if result.train_on is not None:
        say(f"Next: clearclass train {result.train_on}")
    return result


def kaggle_config_dir() -> Path:
    """The folder the kaggle package reads kaggle.json from, decided as it decides it.

    `kaggle_config_dir() / "kaggle.json"` is the file the credentials error names.

    Example:
        print(kaggle_config_dir() / "kaggle.json")  # e.g. /home/me/.kaggle/kaggle.json
    """
    configured = os.environ.get("KAGGLE_CONFIG_DIR")
    if configured:
        return Path(configured).expanduser()
    legacy = Path.home() / ".kaggle"
    if sys.platform.startswith("linux") and not legacy.exists():
        return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"
    return legacy


def _authenticated_api() -> Any:
    """A `KaggleApi` that has found credentials, or a `CredentialsError` saying what to do."""
    config_file = kaggle_config_dir() / "kaggle.json"
    _warn_if_readable(config_file)
    for variable in ("KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        register_secret(os.environ.get(variable, ""))
    with _silenced():
        try:
            from kaggle.api.kaggle_api_extended import KaggleApi
        except ImportError as e:
            raise AcquireError(
                f"Downloading from Kaggle needs the kaggle package ({e}). Install it with: "
                "pip install 'clearclass[acquire]'") from None
        api = KaggleApi()
        # The class fixed its config path when first imported; follow the environment now.
        api.config_dir, api.config = str(config_file.parent), str(config_file)
        try:
            api.authenticate()
        except SystemExit:
            raise CredentialsError(
                "Kaggle needs your API credentials and found none. Create a token at "
                f"{TOKEN_PAGE} (API, \"Create New Token\"), save the kaggle.json it downloads "
                f"as {config_file} and run: chmod 600 {config_file}. Or set KAGGLE_USERNAME "
                "and KAGGLE_KEY (or KAGGLE_API_TOKEN, for an access token).") from None
        except Exception as e:  # an access token is checked online, which can fail
            raise AcquireError(f"Kaggle could not check the credentials: {type(e).__name__}: "
                               f"{redact(str(e))[:300]}. Check the internet connection and "
                               "try again.") from None
    register_secret(str(api.config_values.get("key") or ""))
    return api


def _download(api: Any, owner: str, slug: str, out: Path) -> Path:
    """The dataset's zip, fetched by the kaggle client (which resumes a partial one)."""
    try:
        with _silenced():
            # Its progress bar (tqdm, on stderr) shows where clearclass's bars would.
            shown = enabled() and console.is_terminal
            api.dataset_download_files(f"{owner}/{slug}", path=str(out), quiet=not shown,
                                       unzip=False)
    except SystemExit:
        raise CredentialsError(f"Kaggle refused the download of {owner}/{slug}: the credentials "
                               f"are not accepted. Check them at {TOKEN_PAGE}.") from None
    except Exception as e:  # kaggle raises requests, protobuf and plain errors alike
        raise _failure(e, owner, slug) from None
    archive = out / f"{slug}.zip"
    if not archive.is_file():
        raise AcquireError(f"Kaggle reported the download of {owner}/{slug} done, but "
                           f"{archive} is not there.")
    return archive


def _failure(error: Exception, owner: str, slug: str) -> AcquireError:
    page = f"https://www.kaggle.com/datasets/{owner}/{slug}"
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status == 404:
        return AcquireError(f"Kaggle has no dataset {owner}/{slug} (HTTP 404). Check the name "
                            f"on its page, {page}: OWNER/DATASET is the end of that URL.")
    if status == 401:
        return CredentialsError(f"Kaggle refused the credentials (HTTP 401). Create a new "
                                f"token at {TOKEN_PAGE}.")
    if status == 403:
        return AcquireError(f"Kaggle refused the download of {owner}/{slug} (HTTP 403). Open "
                            f"{page} while logged in and accept its rules or licence, then "
                            "try again.")
    return AcquireError(f"The Kaggle download of {owner}/{slug} failed: "
                        f"{type(error).__name__}: {redact(str(error))[:300]}")


def describe_layout(name: str, folder: Path) -> DatasetDownload:
    """Which folder under `folder` `clearclass train` should get, and why.

    For Kaggle's Stanford Dogs, `describe_layout(...).train_on` is
    `folder/images/Images`. Looks for Stanford Dogs' layout, then (at most three levels
    down) a folder with train/ and valid/ (or val/, test/) class folders, then a folder
    of class folders.

    Example:
        found = describe_layout("my photos", Path("photos"))
        print(found.train_on, found.classes)  # photos 3
        print(found.layout)  # 3 class folders in photos.
    """
    for images in (folder / "images" / "Images", folder / "Images"):
        breeds = _class_folders(images)
        if len(breeds) >= 2:
            extra = " annotations/ holds bounding boxes, not needed to train a classifier." \
                if (folder / "annotations").is_dir() or (folder / "Annotation").is_dir() else ""
            return DatasetDownload(
                name, folder, images,
                f"Stanford Dogs layout: {len(breeds)} breed folders in {images}.{extra} It has "
                "no official split here, so training holds out --validation-fraction of each "
                "breed; `clearclass download stanford-dogs` gets the official train/test split.",
                classes=len(breeds), train=_count_photos(breeds))
    for candidate in _folders_breadth_first(folder, depth=3):
        subfolders = {d.name.lower(): d for d in _subfolders(candidate)}
        valid = next((subfolders[n] for n in VALID_FOLDER_NAMES if n in subfolders), None)
        if "train" in subfolders and valid is not None:
            classes = _class_folders(subfolders["train"])
            if len(classes) >= 2:
                return DatasetDownload(
                    name, folder, candidate,
                    f"train/ and {valid.name}/ class folders in {candidate} ({len(classes)} "
                    "classes): training keeps that split.", classes=len(classes),
                    train=_count_photos(classes), valid=_count_photos(_class_folders(valid)))
        classes = _class_folders(candidate)
        if len(classes) >= 2:
            return DatasetDownload(name, folder, candidate,
                                   f"{len(classes)} class folders in {candidate}.",
                                   classes=len(classes), train=_count_photos(classes))
    return DatasetDownload(
        name, folder, None,
        f"No folder of class folders found in {folder}. clearclass trains on a folder per "
        "class, train/ and valid/ folders, or a CSV of path,label; arrange the files that "
        "way (the dataset's own page may explain its layout).")


def _parse(dataset: str) -> tuple[str, str]:
    match = _DATASET.match(dataset.strip())
    if match is None:
        raise AcquireError(f"{dataset!r} is not a Kaggle dataset name. Give it as OWNER/DATASET, "
                           "e.g. jessicali9530/stanford-dogs-dataset (the end of the dataset's "
                           "kaggle.com/datasets/ URL).")
    return match["owner"], match["slug"]


def _warn_if_readable(config_file: Path) -> None:
    """As the kaggle CLI does: a key others can read is a key others can use."""
    if os.name == "nt" or not config_file.is_file():
        return
    if config_file.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        warn(f"Your Kaggle API key in {config_file} is readable by other users on this "
             f"system. To fix it, run: chmod 600 {config_file}")


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """kaggle prints help texts, warnings and URLs on stdout; clearclass says its own."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _subfolders(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(d for d in folder.iterdir()
                  if d.is_dir() and not d.name.startswith((".", "__")))


def _class_folders(folder: Path) -> list[Path]:
    """Subfolders holding photos directly."""
    return [d for d in _subfolders(folder)
            if any(p.is_file() and is_image_file(p) for p in d.iterdir())]


def _count_photos(folders: list[Path]) -> int:
    return sum(1 for d in folders for p in d.iterdir() if p.is_file() and is_image_file(p))


def _folders_breadth_first(folder: Path, depth: int) -> Iterator[Path]:
    level = [folder]
    for _ in range(depth + 1):
        yield from level
        level = [sub for f in level for sub in _subfolders(f)]
