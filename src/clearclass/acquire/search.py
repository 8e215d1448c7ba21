"""`clearclass search`: photos from an image search, saved as a clean folder-per-class dataset.

For each query (or each line of a classes file):
1. the provider's results are read page by page, lazily;
2. candidates are downloaded in parallel (timeouts, retries, 429 waits: `http.HttpClient`),
   at most `workers` ahead of what has been judged, so little is fetched for nothing;
3. in the order the provider ranked them, a photo is kept only when it decodes, its short
   side is at least `min_side`, and it is neither an identical nor a near copy of a photo
   already kept, in this class or another (`checks`). A photo already kept under another
   class is reported, not saved twice;
4. kept photos go to DIR/<class>/ (resized when `max_side` says so) and DIR/manifest.csv
   records where each came from, until the class has `per_class` photos or the results
   run out, which is said.
Running it again into the same DIR skips what is there: photos listed in the manifest and
photos put in the class folders by other means count towards `per_class`.
"""

from __future__ import annotations

import io
import itertools
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from rich.table import Table

from clearclass import fileio
from clearclass.acquire import http
from clearclass.acquire.http import FetchError, HttpClient
from clearclass.acquire.manifest import MANIFEST, Entry, read_manifest, write_manifest
from clearclass.acquire.providers import Provider, SearchHit, get_provider
from clearclass.data.checks import (
    MIN_SIDE,
    DuplicateIndex,
    Examined,
    canonical_extension,
    examine,
)
from clearclass.data.decode import UnreadableImage
from clearclass.data.sources import is_image_file
from clearclass.errors import AcquireError, SettingError
from clearclass.parallel import map_in_order
from clearclass.progress import bar, say, show, warn

DOWNLOADS_PER_WANTED = 5  # give up on a class after this many downloads per photo wanted
MIN_DOWNLOADS = 20  # ... but never before this many
JPEG_QUALITY = 92  # for photos re-encoded on save (resized, or in a format training skips)

# Why a candidate was not kept; the keys of ClassResult.skipped.
FAILED, UNREADABLE, TOO_SMALL = "download failed", "unreadable", "too small"
IDENTICAL, NEAR, OTHER_CLASS = "duplicate", "near duplicate", "under another class"


@dataclass(frozen=True)
class CrossClass:
    """A photo that came up for two classes; it is kept only in the first."""

    file: str  # the kept copy, relative to DIR
    kept_in: str
    also_for: str
    source_url: str


@dataclass
class ClassResult:
    """What search did for one class."""

    class_id: str  # the folder name
    query: str
    wanted: int
    before: int  # photos already in the folder
    saved: list[Path] = field(default_factory=list)
    downloaded: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # reason -> one case, for messages

    @property
    def label(self) -> str:
        """The folder name; kept for code written before `class_id`."""
        return self.class_id
    ran_out: bool = False  # the provider had no more results
    gave_up: bool = False  # stopped after DOWNLOADS_PER_WANTED downloads per photo wanted

    @property
    def total(self) -> int:
        return self.before + len(self.saved)

    def skip(self, reason: str, example: str = "") -> None:
        self.skipped[reason] += 1
        if example:
            self.examples.setdefault(reason, example)


@dataclass
class SearchReport:
    """What `search` returns: per-class results, photos found under two classes, where
    the manifest is."""

    out: Path
    provider: str
    classes: list[ClassResult]
    cross_class: list[CrossClass]
    manifest: Path

    @property
    def saved(self) -> int:
        return sum(len(c.saved) for c in self.classes)

    def to_table(self) -> Table:
        table = Table(title=f"{self.saved} photo(s) saved in {self.out} ({self.provider})")
        # The query is shown only where it is not just the folder name.
        queries = any(c.query != c.class_id for c in self.classes)
        columns = ("class",) + (("query",) if queries else ()) + \
            ("wanted", "had", "new", "total", "not kept")
        for column in columns:
            table.add_column(column, justify="left" if column in ("class", "query", "not kept")
                             else "right", overflow="fold")
        for c in self.classes:
            skipped = ", ".join(f"{n} {reason}" for reason, n in c.skipped.most_common())
            table.add_row(c.class_id, *((c.query,) if queries else ()), str(c.wanted),
                          str(c.before), str(len(c.saved)), str(c.total), skipped)
        return table


@dataclass
class _Fetched:
    """A downloaded photo that decodes and is big enough, ready to be saved."""

    info: Examined
    payload: bytes  # what is written: the downloaded bytes, or a re-encoded JPEG
    extension: str
    width: int
    height: int


def search(
    queries: Sequence[str] = (),
    provider: str = "duckduckgo",
    per_class: int = 100,
    out: str | Path = "photos",
    classes_file: str | Path | None = None,
    max_side: int | None = None,
    min_side: int = MIN_SIDE,
    workers: int = 8,
    timeout: float = http.TIMEOUT,
    retries: int = http.RETRIES,
    max_bytes: int = http.MAX_IMAGE_BYTES,
    environ: Mapping[str, str] | None = None,
) -> SearchReport:
    """Search for photos of each query and save the good, distinct ones, a folder per class.

    For example, `search(["beagle", "pug"], provider="pexels", per_class=50, out="dogs")` gives
    dogs/beagle/, dogs/pug/ and dogs/manifest.csv. API keys and base URLs come from
    `environ` (default: the process environment): see `providers`.
    """
    for name, value in (("per_class", per_class), ("workers", workers)):
        if value < 1:
            raise SettingError(name, f"must be at least 1; got {value}.")
    if max_side is not None and max_side < min_side:
        raise SettingError("max_side", f"({max_side}) must be at least the smallest side kept "
                                       f"(--min-side {min_side}).")
    classes = _classes(queries, classes_file)
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise AcquireError(f"{out} is a file; give a folder to save the photos in with --out.")
    client = HttpClient(timeout=timeout, retries=retries, pool_size=max(workers, 1))
    source = get_provider(provider, client, environ)  # a missing key fails before any work
    out.mkdir(parents=True, exist_ok=True)
    entries = read_manifest(out)
    index, by_url, have = _index_existing(out, entries, [class_id for class_id, _ in classes],
                                          min_side)

    results: list[ClassResult] = []
    cross: list[CrossClass] = []
    try:
        for class_id, query in classes:
            result = ClassResult(class_id, query, per_class, have[class_id])
            results.append(result)
            if result.before >= per_class:
                say(f"{class_id}: {result.before} photo(s) already in {out / class_id}, none "
                    "needed.")
                continue
            _fill_class(result, source, client, out, entries, index, by_url, cross,
                        min_side=min_side, max_side=max_side, workers=workers,
                        max_bytes=max_bytes)
    finally:
        # Also on an interruption: every saved photo keeps its source.
        write_manifest(out, entries)
        client.close()

    report = SearchReport(out, source.title, results, cross, out / MANIFEST)
    _print(report, source)
    return report


def _fill_class(result: ClassResult, source: Provider, client: HttpClient, out: Path,
                entries: list[Entry], index: DuplicateIndex, by_url: dict[str, Entry],
                cross: list[CrossClass], *, min_side: int, max_side: int | None,
                workers: int, max_bytes: int) -> None:
    """Download, judge and save candidates until the class is full or they run out."""
    class_id = result.class_id
    needed = result.wanted - result.before
    budget = max(MIN_DOWNLOADS, DOWNLOADS_PER_WANTED * needed)

    def new_candidates() -> Iterator[SearchHit]:
        for candidate in source.candidates(result.query):
            known = by_url.get(candidate.image_url)
            if known is None:
                yield candidate
            elif known.class_id != class_id:  # (one already saved in this class is in `before`)
                result.skip(OTHER_CLASS, candidate.image_url)
                cross.append(CrossClass(known.file, known.class_id, class_id, candidate.image_url))

    def fetch(candidate: SearchHit) -> _Fetched | tuple[str, str]:
        return _fetch(client, candidate, max_bytes, min_side, max_side)

    folder = out / class_id
    with bar(class_id, needed) as progress:
        for candidate, fetched in map_in_order(fetch, itertools.islice(new_candidates(), budget),
                                               workers):
            result.downloaded += 1
            progress.set_info(f"{result.downloaded} downloaded")
            if isinstance(fetched, tuple):
                result.skip(*fetched)
                continue
            info = fetched.info
            match = index.find(info.sha256, info.phash)
            if match is not None:
                kept = match.key
                if kept.class_id == class_id:
                    result.skip(IDENTICAL if match.kind == "identical" else NEAR,
                                f"{candidate.image_url} (like {kept.file})")
                else:
                    result.skip(OTHER_CLASS, candidate.image_url)
                    cross.append(CrossClass(kept.file, kept.class_id, class_id,
                                            candidate.image_url))
                continue
            path = fileio.free_path(folder / f"{_file_stem(candidate, info)}{fetched.extension}")
            fileio.write_bytes(path, fetched.payload)
            entry = Entry(path.relative_to(out).as_posix(), class_id, candidate.image_url,
                          candidate.provider, candidate.author, candidate.licence,
                          candidate.page_url, candidate.photo_id, fetched.width,
                          fetched.height, info.sha256, info.phash_hex)
            entries.append(entry)
            index.add(info.sha256, info.phash, entry)
            by_url[candidate.image_url] = entry
            result.saved.append(path)
            source.used(candidate)
            progress.advance()
            if len(result.saved) >= needed:
                break
        else:
            result.gave_up = result.downloaded >= budget
            result.ran_out = not result.gave_up
    if len(result.saved) < needed:
        _say_short(result, source, budget)


def _fetch(client: HttpClient, candidate: SearchHit, max_bytes: int, min_side: int,
           max_side: int | None) -> _Fetched | tuple[str, str]:
    """Download and judge one candidate (on a worker thread): the photo to save, or
    (reason, example) why not."""
    url = candidate.image_url
    try:
        data = client.fetch_bytes(url, max_bytes)
    except FetchError as e:
        return FAILED, f"{url}: {e}"
    try:
        info, rgb = examine(data)
    except UnreadableImage as e:
        return UNREADABLE, f"{url}: {e}"
    if info.short_side < min_side:
        return TOO_SMALL, f"{url}: {info.width}x{info.height} px"
    extension = canonical_extension(info.format)
    shrink = bool(max_side) and max(info.width, info.height) > max_side
    if shrink:
        rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    # Re-encoded when resized, or in a format Pillow reads but training does not look for
    # (AVIF, ICO, ...).
    if shrink or extension is None:
        return _Fetched(info, _jpeg(rgb), ".jpg", rgb.width, rgb.height)
    return _Fetched(info, data, extension, info.width, info.height)


def _jpeg(rgb: Image.Image) -> bytes:
    buffer = io.BytesIO()
    rgb.save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _index_existing(out: Path, entries: list[Entry], class_ids: list[str], min_side: int
                    ) -> tuple[DuplicateIndex, dict[str, Entry], Counter]:
    """What DIR already holds: the manifest's photos, and photos put in the class folders
    by other means (hashed here; they count towards per_class when they are usable)."""
    index, by_url, have = DuplicateIndex(), {}, Counter()
    listed = set()
    for entry in entries:
        index.add(entry.sha256, entry.phash_int, entry)
        by_url.setdefault(entry.source_url, entry)
        have[entry.class_id] += 1
        listed.add(entry.file)
    for class_id in class_ids:
        folder = out / class_id
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p)):
            rel = path.relative_to(out).as_posix()
            if rel in listed:
                continue
            try:
                info, _ = examine(path.read_bytes())
            except (UnreadableImage, OSError):
                continue
            if info.short_side >= min_side:
                index.add(info.sha256, info.phash, Entry(rel, class_id, "", "local file"))
                have[class_id] += 1
    return index, by_url, have


def _say_short(result: ClassResult, source: Provider, budget: int) -> None:
    if result.gave_up:
        why = f"stopped after {budget} downloads, too few of them usable"
    else:
        why = f"{source.title} has no more results for {result.query!r}"
    skipped = ", ".join(f"{n} {reason}" for reason, n in result.skipped.most_common())
    warn(f"{result.class_id}: {result.total} of {result.wanted} photos; {why}"
         + (f" (not kept: {skipped})" if skipped else "") + ".")
    for reason in (FAILED, UNREADABLE):
        if reason in result.examples and result.skipped[reason] >= 3:
            warn(f"  e.g. {reason}: {result.examples[reason]}")


def _print(report: SearchReport, source: Provider) -> None:
    show(report.to_table())
    if report.cross_class:
        say(f"{len(report.cross_class)} photo(s) came up for two classes and were kept only "
            "in the first; check that the classes are distinct:")
        for c in report.cross_class[:10]:
            say(f"  {c.file} (kept in {c.kept_in}) also came up for {c.also_for}")
        if len(report.cross_class) > 10:
            say(f"  ... and {len(report.cross_class) - 10} more")
    if source.licence:
        say(f"Photos from {source.title} are under the {source.licence}; author and page of "
            f"each are in {report.manifest}.")
    elif source.name == "flickr":
        say(f"Each photo's Creative Commons licence and author are in {report.manifest}; "
            "most licences require attribution.")
    else:
        say(f"{source.title} gives no licence: the photos may be copyrighted. Each one's page "
            f"is in {report.manifest}; check it before using a photo beyond experiments.")
    say(f"Next: clearclass verify {report.out}, then clearclass train {report.out}")


def slugify(query: str) -> str:
    """A folder name for a query: lower case, words joined by underscores.

    Training and evaluation show the folder name with spaces again ("golden retriever").

    Example:
        print(slugify("Golden Retriever"))  # golden_retriever
        print(slugify("  Shih-Tzu (dog) "))  # shih_tzu_dog
    """
    text = unicodedata.normalize("NFKC", query).strip().lower()
    return re.sub(r"\W+", "_", text).strip("_")


def _classes(queries: Sequence[str], classes_file: str | Path | None) -> list[tuple[str, str]]:
    """(folder name, query) for each query and each line of the classes file."""
    wanted = [q.strip() for q in queries if q.strip()]
    if classes_file is not None:
        path = Path(classes_file).expanduser()
        if not path.is_file():
            raise AcquireError(f"Classes file {path} does not exist. Give a text file with "
                               "one class (search query) per line.")
        lines = path.read_text(encoding="utf-8-sig").splitlines()
        wanted += [line.strip() for line in lines if line.strip() and
                   not line.lstrip().startswith("#")]
    if not wanted:
        raise AcquireError("No classes to search for: give queries (clearclass search beagle "
                           "pug ...) or a file with one per line (--classes FILE).")
    classes, query_of = [], {}
    for query in dict.fromkeys(wanted):
        class_id = slugify(query)
        if not class_id:
            raise AcquireError(f"The query {query!r} has no letter or digit to name its "
                               "folder after; rephrase it.")
        if class_id in query_of:
            raise AcquireError(f"The queries {query_of[class_id]!r} and {query!r} would share the "
                               f"folder {class_id}/; make them differ by more than punctuation "
                               "or case.")
        query_of[class_id] = query
        classes.append((class_id, query))
    return classes


def _file_stem(candidate: SearchHit, info: Examined) -> str:
    photo_id = re.sub(r"[^A-Za-z0-9_-]+", "_", candidate.photo_id).strip("_")[:40]
    return f"{candidate.provider}-{photo_id or info.sha256[:16]}"
