"""Unpacking downloaded archives safely and all at once.

An entry that would land outside the destination (an absolute path, `..`, a link pointing
out) stops the extraction with an error; tar files go through Python's `data` filter,
which also drops device files and unsafe permissions. Everything is unpacked into a hidden
staging folder beside the destination and renamed into place at the end, so an interrupted
or refused extraction never leaves a half-filled dataset that looks complete.
"""

from __future__ import annotations

import shutil
import tarfile
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from clearclass.errors import AcquireError
from clearclass.progress import bar


def unpack(archives: Sequence[Path], dest: Path, strip_single_folder: bool = False) -> Path:
    """Extract .tar/.tgz/.zip files into `dest`, which must not exist yet.

    With `strip_single_folder=True`, an archive holding one top folder (as
    imagewoof2-320.tgz holds imagewoof2-320/) gives that folder's content.

    Example:
        import shutil, tempfile
        archive = Path(shutil.make_archive(tempfile.mkdtemp() + "/photos", "gztar", ".", "photos"))
        folder = unpack([archive], archive.with_name("dataset"), strip_single_folder=True)
        print(sorted(p.name for p in folder.iterdir()))  # the class folders of photos/
    """
    dest = Path(dest)
    if dest.exists():
        raise AcquireError(f"{dest} already exists; remove it to unpack again.")
    staging = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for archive in archives:
            if zipfile.is_zipfile(archive):
                _unzip(archive, staging)
            else:
                _untar(archive, staging)
        content = staging
        entries = list(staging.iterdir())
        if strip_single_folder and len(entries) == 1 and entries[0].is_dir():
            content = entries[0]
        content.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def _untar(archive: Path, staging: Path) -> None:
    total = archive.stat().st_size
    try:
        with open(archive, "rb") as raw, tarfile.open(fileobj=raw, mode="r:*") as tar, \
                bar(f"unpacking {archive.name} (MB)", round(total / 1e6)) as progress:
            done = 0
            for member in tar:
                _extract_member(tar, member, staging, archive)
                now = round(raw.tell() / 1e6)
                progress.advance(now - done)
                done = now
    except (tarfile.ReadError, tarfile.CompressionError, EOFError, zlib.error) as e:
        raise AcquireError(
            f"{archive} is damaged or not a tar archive ({e}). Delete it and run the command "
            "again to download it afresh.") from None


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, staging: Path,
                    archive: Path) -> None:
    if hasattr(tarfile, "data_filter"):
        try:
            tar.extract(member, staging, filter="data")
        except tarfile.FilterError as e:
            raise _unsafe(archive, member.name, str(e)) from None
        return
    # Pythons before 3.10.12/3.11.4 have no filter: allow plain files and folders only.
    if not (member.isfile() or member.isdir()):
        return
    _check_name(archive, member.name)
    tar.extract(member, staging)


def _unzip(archive: Path, staging: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for info in members:
                _check_name(archive, info.filename)
            with bar(f"unpacking {archive.name}", len(members)) as progress:
                for info in members:
                    zf.extract(info, staging)
                    progress.advance()
    except (zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise AcquireError(
            f"{archive} is damaged or not a zip archive ({e}). Delete it and run the command "
            "again to download it afresh.") from None


def _check_name(archive: Path, name: str) -> None:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise _unsafe(archive, name, "it points outside the destination folder")


def _unsafe(archive: Path, name: str, why: str) -> AcquireError:
    return AcquireError(f"{archive} holds an unsafe entry {name!r} ({why}); nothing was "
                        "extracted from it. Get the archive from its official source.")
