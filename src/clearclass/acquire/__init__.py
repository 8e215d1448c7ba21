"""Getting the photos: Kaggle, well-known datasets, image search, and checking the result.

    from clearclass import acquire
    acquire.download_kaggle("jessicali9530/stanford-dogs-dataset", out="data")
    acquire.download_dataset("imagewoof", size="320", out="data")
    acquire.search(["beagle", "pug"], provider="pexels", per_class=50, out="dogs")
    acquire.verify("dogs", move_to="rejected")

What the CLI calls (each prints progress and a summary through `clearclass.progress`, raises
`clearclass.errors.AcquireError` or `CredentialsError` with a message saying what to do,
and returns an object describing what it did):

- `download_kaggle(dataset, out="data", keep_archives=False) -> DatasetDownload`
- `download_dataset(name, size="320", out="data", keep_archives=False, timeout=30.0,
  retries=3) -> DatasetDownload`; `name` in DATASETS, `size` in SIZES
- `search(queries=(), provider="duckduckgo", per_class=100, out="photos",
  classes_file=None, max_side=None, min_side=64, workers=8, timeout=30.0, retries=3,
  max_bytes=25 MiB, environ=None) -> SearchReport`; `provider` in PROVIDERS
- `verify(folder, delete=False, move_to=None, fix_extensions=False, min_side=64,
  near_bits=6, workers=None) -> VerifyReport`

Modules: `http` (session, retries, 429 waits, parallel and resumable downloads, key
redaction), `providers` (one class per image search service), `checks` (decodable, big
enough, duplicates), `search`, `manifest` (DIR/manifest.csv), `verify`, `datasets`
(fastai's and Stanford's archives), `kaggle`, `archives` (safe extraction).
`PROVIDERS`, `DATASETS` and `SIZES` are the choices of --provider, `download` and --size.
"""

from __future__ import annotations

from clearclass.errors import AcquireError

try:
    from clearclass.acquire.datasets import DATASETS, SIZES, DatasetDownload, download_dataset
    from clearclass.acquire.kaggle import download_kaggle
    from clearclass.acquire.providers import PROVIDERS as _PROVIDER_CLASSES
    from clearclass.acquire.search import SearchReport, search
    from clearclass.acquire.verify import VerifyReport, verify
except ModuleNotFoundError as e:
    # These commands need packages training does not (requests, ddgs, ...): an extra.
    if (e.name or "").startswith("clearclass"):
        raise
    raise AcquireError(f"Getting and checking photos needs the {e.name!r} package, which is "
                       "not installed. Install it with: pip install 'clearclass[acquire]'"
                       ) from None

PROVIDERS = tuple(_PROVIDER_CLASSES)

__all__ = [
    "DATASETS",
    "PROVIDERS",
    "SIZES",
    "DatasetDownload",
    "SearchReport",
    "VerifyReport",
    "download_dataset",
    "download_kaggle",
    "search",
    "verify",
]
