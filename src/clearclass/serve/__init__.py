"""`clearclass serve MODEL`: a web page and an HTTP API over a trained model.

A FastAPI app (served by uvicorn) over the same predictor as `clearclass predict` (ONNX
Runtime on the CPU when the bundle has model.onnx; then PyTorch is never imported):
- `GET /`: a page to choose, drop, paste or take a photo; it shows the photo with its five
  most likely classes as bars, and the time taken (a multi-label model: the predicted set,
  and every label's probability as a bar with its threshold marked). Plain HTML, CSS and
  JavaScript served by the app: nothing is fetched from anywhere else.
- `POST /predict`: a photo in the multipart field `file` (one JSON object back), or several
  in `files` (a list), each object as `clearclass predict --json` prints it
  (`Prediction.to_dict`; a multi-label model's: labels, class_ids, predicted and every
  label's probability and threshold). `?top_k=N` (single-label models).
- `GET /health`, `GET /model` (task, classes with a multi-label model's thresholds: those
  it decides with, model.json's or `serve --threshold` for every label; architecture,
  preprocessing, the run's accuracy when the bundle sits in its run folder), OpenAPI docs at
  `/docs`.

The network's outputs become probabilities and a decision by the model's task
(`Classifier.predict_proba_pixels` and `Classifier.prediction`): softmax and the most likely
class, or sigmoids and every label over its threshold.

Bad input is a 4xx answer with a JSON message, never a 500 and never a stopped server: a
file over `max_upload_bytes` (413, as soon as the bytes past the limit arrive, chunked or
not: `limits.UploadLimits`), not an image (415), more pixels decoded than `max_pixels` (a
decompression bomb: 400) or more memory than the decoding budget (400), both judged from
the header before anything is decoded, an empty or undecodable file (400).

Memory is bounded for the process as a whole: photos are decoded with the rules of
`clearclass predict` (`data.decode.load_item`: a JPEG at a reduced scale, a strip cut to
its middle before it is resized), and the photos being decoded at once, from one request
or from many, hold at most `decode_memory_bytes` of estimated memory between them
(`limits.MemoryBudget`); the others wait their turn. The upload bytes held by requests in
progress (in memory or in the temporary folder) are bounded too (503 past the bound).
Requests that arrive together are predicted together: a
micro-batcher gathers the photos that queued while the network ran (up to `MAX_BATCH`) into
one ONNX Runtime run, which uses every core given to the process, while photos are decoded
on the request threads. With `--workers N`, each of the N processes gets cores / N threads,
so that the machine is not oversubscribed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse

from clearclass.bundle import bundle_folder
from clearclass.data.decode import (
    NOT_AN_IMAGE,
    DecodeCost,
    UnreadableImage,
    decode_cost,
    load_item,
)
from clearclass.errors import ClearclassError, RunError, SettingError
from clearclass.fileio import json_text
from clearclass.parallel import available_cores, check_process_count
from clearclass.predict import Classifier, check_threshold, load
from clearclass.run_folder import RunFolder
from clearclass.serve.limits import HELD_REQUESTS, MemoryBudget, UploadLimits, largest_request

MAX_UPLOAD_BYTES = 10 * 1000 * 1000  # per photo: 10 MB
# A phone photo has 12-50 megapixels; a file claiming far more is a decompression bomb (a few
# KB that would decode into gigabytes). Pillow's own guard starts at 89 MP with a warning.
# Counted as decoded: a JPEG decoded at a reduced scale (draft mode) counts those pixels.
MAX_PIXELS = 80_000_000
# The estimated memory of the photos decoded at once, for the whole server (shared among
# --workers): enough for any photo of MAX_PIXELS in the usual modes to be decoded, alone,
# the largest being 80 MP of palette with a transparent colour (1,048 MB) or RGBA (1,008
# MB). 1.1 GB decodes 80 MP RGB PNGs (368 MB) two at a time, 80 MP of grey (128 MB) eight
# at a time, a 12 MP phone JPEG (decoded at 1/8 scale: under 10 MB; 80 MB if progressive)
# by the hundred; 80 MP of grey-and-alpha pixels, or a WebP of 80 MP (1.3 GB), is refused,
# naming --decode-memory-mb.
DECODE_MEMORY_BYTES = 1100 * 1000 * 1000
MAX_FILES = 32  # photos in one request
MAX_BATCH = 16  # photos in one run of the network
# Seconds the batcher waits for more photos after the first. 0: a batch is what queued
# while the network ran. (Waiting 3 ms cost 6 ms of latency for a lone client and raised the
# p99 at 4 clients from 76 to 102 ms in benchmarks/serve_load.py.)
BATCH_WAIT = 0.0
MODEL_VARIABLE, THREADS_VARIABLE = "CLEARCLASS_SERVE_MODEL", "CLEARCLASS_SERVE_THREADS"
# `serve --threshold`, handed to each uvicorn worker process (unset: model.json's thresholds).
THRESHOLD_VARIABLE = "CLEARCLASS_SERVE_THRESHOLD"
# The limits of `serve`, handed to each uvicorn worker process (its share where shared).
LIMIT_VARIABLES = {"max_upload_bytes": "CLEARCLASS_SERVE_MAX_BYTES",
                   "max_pixels": "CLEARCLASS_SERVE_MAX_PIXELS",
                   "decode_memory_bytes": "CLEARCLASS_SERVE_DECODE_BYTES",
                   "max_held_bytes": "CLEARCLASS_SERVE_HELD_BYTES"}
PAGE = Path(__file__).with_name("page.html")


class _Rejected(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class MicroBatcher:
    """Gathers the photos of concurrent requests into batches for one network.

    ONNX Runtime already spreads one run over every core; two runs at once would fight over
    them. So one thread runs the network, on as many photos as arrived meanwhile.
    """

    def __init__(self, classifier: Classifier, max_batch: int = MAX_BATCH,
                 wait: float = BATCH_WAIT):
        self.classifier, self.max_batch, self.wait = classifier, max_batch, wait
        self.queue: asyncio.Queue | None = None
        self.runner = ThreadPoolExecutor(1, thread_name_prefix="clearclass-network")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.runner.shutdown(wait=False)

    async def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((pixels, future))
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            deadline = loop.time() + self.wait
            while len(items) < self.max_batch:
                left = deadline - loop.time()
                try:
                    items.append(self.queue.get_nowait() if left <= 0
                                 else await asyncio.wait_for(self.queue.get(), left))
                except (asyncio.QueueEmpty, TimeoutError):
                    break
            batch = np.stack([pixels for pixels, _ in items])
            try:
                rows = await loop.run_in_executor(self.runner,
                                                  self.classifier.predict_proba_pixels, batch)
            except Exception as e:  # noqa: BLE001  (handed to each waiting request)
                for _, future in items:
                    if not future.done():
                        future.set_exception(e)
                continue
            for (_, future), row in zip(items, rows):
                if not future.done():
                    future.set_result(row)


def create_app(model: str | Path, max_upload_bytes: int = MAX_UPLOAD_BYTES,
               max_pixels: int = MAX_PIXELS, threads: int | None = None,
               decode_memory_bytes: int = DECODE_MEMORY_BYTES,
               max_held_bytes: int | None = None,
               threshold: float | None = None) -> FastAPI:
    """The FastAPI app that serves `model` (a bundle folder or a run folder).

    `max_upload_bytes`: the largest photo; `max_pixels`: the most pixels a photo may
    decode into; `decode_memory_bytes`: the estimated memory of the photos decoded at once;
    `max_held_bytes`: the upload bytes requests in progress may hold at once (default:
    HELD_REQUESTS requests of the largest size). `threshold`: a multi-label model predicts
    every label whose probability reaches this, instead of model.json's thresholds (as
    `clearclass.load(threshold=)`; a single-label model refuses it).

    Example:
        from fastapi.testclient import TestClient
        with TestClient(create_app("runs/dogs/model")) as client, open("new.jpg", "rb") as f:
            print(client.post("/predict", files={"file": f}).json()["label"])
    """
    classifier = load(model, device="cpu", threads=threads, threshold=threshold)
    batcher = MicroBatcher(classifier)
    about = _about(classifier, threshold)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    kind = "labels (multi-label)" if about["task"] == "multi" else "classes"
    app = FastAPI(title=f"clearclass: {about['architecture']}, {len(about['classes'])} {kind}",
                  description="Predict the class (a multi-label model: the labels) of a "
                              "photo. `POST /predict` with the photo in the multipart field "
                              "`file` (or several in `files`).",
                  lifespan=lifespan, default_response_class=_JSON)
    budget = MemoryBudget(decode_memory_bytes)
    app.add_middleware(UploadLimits, max_photo_bytes=max_upload_bytes, max_photos=MAX_FILES,
                       max_held_bytes=max_held_bytes)
    size, method = classifier.info.item_resize, classifier.info.resize_method

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, error: RequestValidationError):
        where = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}"
                          for e in error.errors())
        return _error(400, f"Bad request ({where}). Send a photo in the multipart field "
                           "'file', e.g. curl -F file=@photo.jpg URL/predict.")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        return _error(error.status_code, str(error.detail), error.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception):
        # A fault of the server, not of the request: say what it was, keep serving.
        return _error(500, f"The server failed: {type(error).__name__}: {error}")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.get("/health")
    async def health() -> dict:
        """Whether the server is up and which model it serves."""
        return {"status": "ok", "architecture": about["architecture"],
                "classes": len(about["classes"])}

    @app.get("/model")
    async def model_info() -> dict:
        """The model: task ("single" or "multi"), classes (a multi-label model's with each
        label's threshold, the one it decides with), threshold (a multi-label model's: the
        value `serve --threshold` gave every label, or null for model.json's own),
        architecture, preprocessing, accuracy when known."""
        return about

    @app.post("/predict")
    async def predict(
        file: Annotated[UploadFile | None, File(description="A photo.")] = None,
        files: Annotated[list[UploadFile] | None, File(description="Several photos.")] = None,
        top_k: Annotated[int, Query(ge=1, le=100, description=(
            "Classes listed (a multi-label answer lists every label)."))] = 5,
    ) -> Any:
        """The most likely classes of a photo (`file`) or of several (`files`, a list back).

        Each answer is the object `clearclass predict --json` prints: image, label,
        class_id, probability, top_k; for a multi-label model image, labels and class_ids
        (the predicted set, maybe empty), predicted (those labels with their probability
        and threshold) and probabilities (every label's, most likely first). In a list, a
        photo that cannot be read is {"image", "error"} and the others are predicted.
        """
        if file is None and not files:
            raise HTTPException(400, "No photo: send one in the multipart field 'file' (or "
                                     "several in 'files'), e.g. curl -F file=@photo.jpg "
                                     "URL/predict.")
        if file is not None and files:
            raise HTTPException(400, "Send either 'file' or 'files', not both.")
        if file is not None:
            try:
                return await _predict_one(file, top_k)
            except _Rejected as e:
                raise HTTPException(e.status, e.message) from None
        if len(files) > MAX_FILES:
            raise HTTPException(413, f"{len(files)} photos; a request may have {MAX_FILES}.")
        answers = await asyncio.gather(*(_predict_one(f, top_k) for f in files),
                                       return_exceptions=True)
        for answer in answers:
            if isinstance(answer, _Rejected) and answer.status == 413:
                raise HTTPException(413, answer.message)
            if isinstance(answer, BaseException) and not isinstance(answer, _Rejected):
                raise answer
        return [{"image": f.filename or "upload", "error": a.message}
                if isinstance(a, _Rejected) else a for f, a in zip(files, answers)]

    async def _predict_one(upload: UploadFile, top_k: int) -> dict:
        # The photo stays in Starlette's spooled file (memory up to 1 MB, then the temporary
        # folder); the decoder reads it from there, never a copy of it in bytes.
        name = upload.filename or "upload"
        if upload.size is not None and upload.size > max_upload_bytes:  # UploadLimits's job
            raise _Rejected(413, f"{name} is larger than {max_upload_bytes:,} bytes, the "
                                 "limit for one photo (clearclass serve --max-upload-mb).")
        if not upload.size:
            raise _Rejected(400, f"{name} is empty.")
        cost = await run_in_threadpool(_judge, upload.file, name, size, method, max_pixels,
                                       budget.total)
        async with budget.hold(cost.bytes):
            pixels = await run_in_threadpool(_decode, upload.file, name, size, method)
        row = await batcher.probabilities(pixels)
        return classifier.prediction(name, row, top_k).to_dict()

    return app


def _judge(file, name: str, size: int, method: str, max_pixels: int,
           max_bytes: int) -> DecodeCost:
    """What decoding an uploaded photo takes, from its header; _Rejected if too much."""
    try:
        cost = decode_cost(file, size, method)
    except UnreadableImage as e:
        if str(e) == NOT_AN_IMAGE:
            raise _Rejected(415, f"{name} is not an image, or one in a format Pillow cannot "
                                 "read (JPEG, PNG, WebP, GIF, BMP, TIFF are).") from None
        raise _Rejected(400, f"{name} cannot be read as an image ({e}).") from None
    (width, height), pixels = cost.decoded, cost.decoded_pixels
    if pixels > max_pixels:
        raise _Rejected(400, f"{name} is {width} x {height} = {pixels:,} pixels, more than "
                             f"the limit of {max_pixels:,}: refused without decoding it "
                             "(clearclass serve --max-megapixels).")
    if cost.bytes > max_bytes:
        raise _Rejected(400, f"{name}: {cost.describe()}, more than this server process "
                             f"decodes at once ({max_bytes / 1e6:,.0f} MB): refused without "
                             "decoding it (clearclass serve --decode-memory-mb, shared among "
                             "its --workers).")
    return cost


def _decode(file, name: str, size: int, method: str) -> np.ndarray:
    """The model's input for an uploaded photo, decoded as `clearclass predict` does."""
    file.seek(0)
    try:
        return load_item(file, size, method, max_bytes=None)  # judged by _judge
    except UnreadableImage as e:
        raise _Rejected(400, f"{name} cannot be decoded ({e}).") from None


def _about(classifier: Classifier, threshold: float | None = None) -> dict:
    """GET /model: what the model is. A multi-label model's classes carry the threshold the
    server decides with (model.json's, or `threshold` for every label), and "threshold" says
    which: `threshold`, or None for model.json's."""
    info = classifier.info
    classes = [{"id": c, "name": n} for c, n in zip(info.class_ids, info.class_names)]
    about = {"architecture": info.architecture, "task": info.task, "classes": classes,
             "size": info.item_resize, "resize_method": info.resize_method, "mean": list(info.mean),
             "std": list(info.std), "backend": classifier.backend, "accuracy": None}
    if info.task == "multi":  # the thresholds the server decides with
        thresholds = np.broadcast_to(np.asarray(classifier.task.thresholds, dtype=np.float64),
                                     len(classes))
        for entry, value in zip(classes, thresholds):
            entry["threshold"] = float(value)
        about["threshold"] = threshold
    # The accuracy of the run the model comes from, when it lies in a run folder. A bundle
    # copied elsewhere has none, and a damaged metrics.csv only leaves it out: the page
    # classifies photos without it.
    with contextlib.suppress(RunError):
        history = RunFolder(bundle_folder(classifier.path).parent).history()
        if history and math.isfinite(history[-1].accuracy):
            about["accuracy"] = history[-1].accuracy
    return about


class _JSON(JSONResponse):
    """JSON whose class names and file names may be any the file system gives: a name that
    is not UTF-8 is sent as the JSON escape \\udce9 (`fileio.json_text`), as `clearclass
    predict --json` prints it, where the default encoder fails."""

    def render(self, content: Any) -> bytes:
        return json_text(content, indent=None, separators=(",", ":"),
                         allow_nan=False).encode("utf-8")


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return _JSON({"detail": message}, status_code=status, headers=headers)


def app_from_environment() -> FastAPI:
    """The app for uvicorn's worker processes: the model, thread count, limits and threshold
    come from $CLEARCLASS_SERVE_MODEL, $CLEARCLASS_SERVE_THREADS, LIMIT_VARIABLES and
    $CLEARCLASS_SERVE_THRESHOLD (set by `serve`)."""
    threads = os.environ.get(THREADS_VARIABLE, "")
    limits = {name: int(os.environ[variable]) for name, variable in LIMIT_VARIABLES.items()
              if os.environ.get(variable, "").isdigit()}
    return create_app(os.environ[MODEL_VARIABLE],
                      threads=int(threads) if threads.isdigit() else None,
                      threshold=_threshold_from(os.environ.get(THRESHOLD_VARIABLE)), **limits)


def _threshold_from(text: str | None) -> float | str | None:
    """$CLEARCLASS_SERVE_THRESHOLD as `serve` wrote it (the repr of a checked float, which
    reads back exactly); None when unset. Text that is not a number is handed on as it is,
    for `load`'s check_threshold to refuse by name."""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return text


def serve(model: str | Path, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          max_upload_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS,
          decode_memory_bytes: int = DECODE_MEMORY_BYTES,
          threshold: float | None = None) -> None:
    """Serve `model` until stopped (Ctrl-C): `workers` processes, cores and the decoding
    memory shared among them. `threshold`: a multi-label model predicts every label whose
    probability reaches this, instead of model.json's thresholds.

    A port that another program holds, a host that is not this machine's and a port that
    needs privileges each raise SettingError before anything starts, as do a threshold that
    is not a probability and one given to a single-label model.
    """
    import uvicorn

    check_process_count("workers", workers, "server processes")
    if threshold is not None:
        threshold = check_threshold(threshold)  # before a model on the Hub is fetched
    # A bad model (or a threshold it refuses) is one clear error here, not one per worker;
    # the workers get the folder it was loaded from (a model on the Hub is fetched into the
    # cache once, here).
    folder = load(model, device="cpu", threshold=threshold).path
    _check_address(host, port)
    largest = largest_request(max_upload_bytes, MAX_FILES)
    os.environ[MODEL_VARIABLE] = str(Path(folder).expanduser().resolve())
    os.environ[THREADS_VARIABLE] = str(max(1, available_cores() // workers))
    shares = {"max_upload_bytes": max_upload_bytes, "max_pixels": max_pixels,
              "decode_memory_bytes": decode_memory_bytes // workers,
              "max_held_bytes": max(largest, HELD_REQUESTS * largest // workers)}
    for name, variable in LIMIT_VARIABLES.items():
        os.environ[variable] = str(shares[name])
    if threshold is None:
        os.environ.pop(THRESHOLD_VARIABLE, None)
    else:
        os.environ[THRESHOLD_VARIABLE] = repr(threshold)
    try:
        uvicorn.run("clearclass.serve:app_from_environment", factory=True, host=host,
                    port=port, workers=workers, log_level="info")
    except SystemExit as e:
        if e.code != 3:  # uvicorn's STARTUP_FAILURE, not `predict`'s "some photos failed"
            raise
        raise ClearclassError("The server did not start; the log line above says why "
                              "(another program took the port since it was checked?).") from None


def _check_address(host: str, port: int) -> None:
    """Bind host:port as uvicorn will, and let go: a busy port is one clear error here,
    not uvicorn's log line and exit status 3."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except socket.gaierror:
            raise SettingError("host", f"{host!r} is not a name or address this machine "
                                       "knows; use 127.0.0.1 (this machine only) or 0.0.0.0 "
                                       "(every network interface).") from None
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise SettingError("port", f"{port} on {host} is in use by another program; "
                                           "stop it, or choose another port with "
                                           "--port.") from None
            if e.errno == errno.EACCES:
                raise SettingError("port", f"{port} needs administrator rights (ports below "
                                           "1024 do); choose one above 1024, e.g. --port "
                                           "8000.") from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise SettingError("host", f"{host} is not an address of this machine; use "
                                           "127.0.0.1 (this machine only) or 0.0.0.0 (every "
                                           "network interface).") from None
            raise SettingError("port", f"{port} on {host} cannot be listened on "
                                       f"({e.strerror or e}).") from None
