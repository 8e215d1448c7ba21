"""`clearclass serve MODEL`: a web page and an HTTP API over a trained model.

A FastAPI app (served by uvicorn) over the same predictor as `clearclass predict` (ONNX
Runtime on the CPU when the bundle has model.onnx; then PyTorch is never imported):
- `GET /`: a page to choose, drop, paste or take a photo; it shows the photo with its five
  most likely classes as bars, and the time taken. Plain HTML, CSS and JavaScript served by
  the app: nothing is fetched from anywhere else.
- `POST /predict`: a photo in the multipart field `file` (one JSON object back), or several
  in `files` (a list), each object as `clearclass predict --json` prints it. `?top_k=N`.
- `GET /health`, `GET /model` (classes, architecture, preprocessing, the run's accuracy when
  the bundle sits in its run folder), OpenAPI docs at `/docs`.

Bad input is a 4xx answer with a JSON message, never a 500 and never a stopped server: a
file over `max_upload_bytes` (413), not an image (415), more pixels than `max_pixels` (a
decompression bomb: 400, checked from the header before anything is decoded), an empty or
undecodable file (400). Requests that arrive together are predicted together: a
micro-batcher gathers the photos that queued while the network ran (up to `MAX_BATCH`) into
one ONNX Runtime run, which uses every core given to the process, while photos are decoded
on the request threads. With `--workers N`, each of the N processes gets cores / N threads,
so that the machine is not oversubscribed.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image, UnidentifiedImageError

from clearclass.bundle import bundle_folder
from clearclass.data.decode import UnreadableImage, open_rgb
from clearclass.fileio import json_text
from clearclass.parallel import available_cores
from clearclass.predict import Classifier, load

MAX_UPLOAD_BYTES = 10 * 1000 * 1000  # per photo: 10 MB
# A phone photo has 12-50 megapixels; a file claiming far more is a decompression bomb (a few
# KB that would decode into gigabytes). Pillow's own guard starts at 89 MP with a warning.
MAX_PIXELS = 80_000_000
MAX_FILES = 32  # photos in one request
MAX_BATCH = 16  # photos in one run of the network
# Seconds the batcher waits for more photos after the first. 0: a batch is what queued
# while the network ran. (Waiting 3 ms cost 6 ms of latency for a lone client and raised the
# p99 at 4 clients from 76 to 102 ms in benchmarks/serve_load.py.)
BATCH_WAIT = 0.0
MODEL_VARIABLE, THREADS_VARIABLE = "CLEARCLASS_SERVE_MODEL", "CLEARCLASS_SERVE_THREADS"
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
               max_pixels: int = MAX_PIXELS, threads: int | None = None) -> FastAPI:
    """The FastAPI app that serves `model` (a bundle folder or a run folder).

    Example:
        from fastapi.testclient import TestClient
        with TestClient(create_app("runs/dogs/model")) as client, open("new.jpg", "rb") as f:
            print(client.post("/predict", files={"file": f}).json()["label"])
    """
    classifier = load(model, device="cpu", threads=threads)
    batcher = MicroBatcher(classifier)
    about = _about(classifier)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title=f"clearclass: {about['architecture']}, {len(about['classes'])} classes",
                  description="Predict the class of a photo. `POST /predict` with the photo "
                              "in the multipart field `file` (or several in `files`).",
                  lifespan=lifespan, default_response_class=_JSON)
    largest_request = MAX_FILES * max_upload_bytes + 1_000_000

    @app.middleware("http")
    async def refuse_huge_bodies(request: Request, call_next):
        # Before the body is read: a 2 GB upload is refused at once, not spooled to disk.
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > largest_request:
            return _error(413, f"The request has {int(length):,} bytes; a photo may have "
                               f"{max_upload_bytes:,} and a request {MAX_FILES} photos.")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, error: RequestValidationError):
        where = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}"
                          for e in error.errors())
        return _error(400, f"Bad request ({where}). Send a photo in the multipart field "
                           "'file', e.g. curl -F file=@photo.jpg URL/predict.")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        return _error(error.status_code, str(error.detail))

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
        """The model: classes, architecture, preprocessing, accuracy when known."""
        return about

    @app.post("/predict")
    async def predict(
        file: Annotated[UploadFile | None, File(description="A photo.")] = None,
        files: Annotated[list[UploadFile] | None, File(description="Several photos.")] = None,
        top_k: Annotated[int, Query(ge=1, le=100, description="Classes listed.")] = 5,
    ) -> Any:
        """The most likely classes of a photo (`file`) or of several (`files`, a list back).

        Each answer is the object `clearclass predict --json` prints: image, label,
        class_id, probability, top_k. In a list, a photo that cannot be read is
        {"image", "error"} and the others are predicted.
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
        name = upload.filename or "upload"
        data = await upload.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise _Rejected(413, f"{name} is larger than {max_upload_bytes:,} bytes, the "
                                 "limit for one photo (clearclass serve --max-upload-mb).")
        if not data:
            raise _Rejected(400, f"{name} is empty.")
        pixels = await run_in_threadpool(_pixels, classifier, data, name, max_pixels)
        row = await batcher.probabilities(pixels)
        return classifier.prediction(name, row, top_k).to_dict()

    return app


def _pixels(classifier: Classifier, data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """The model's input for an uploaded photo; _Rejected with the status and reason."""
    try:
        with warnings.catch_warnings():  # a large image is judged below, by max_pixels
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:  # reads the header only
                width, height = header.size
    except UnidentifiedImageError:
        raise _Rejected(415, f"{name} is not an image, or one in a format Pillow cannot "
                             "read (JPEG, PNG, WebP, GIF, BMP, TIFF are).") from None
    except (Image.DecompressionBombError, OSError, ValueError) as e:
        raise _Rejected(400, f"{name} cannot be read as an image ({e}).") from None
    if width * height > max_pixels:
        raise _Rejected(400, f"{name} is {width} x {height} = {width * height:,} pixels, more "
                             f"than the limit of {max_pixels:,}: refused without decoding it.")
    try:
        image = open_rgb(io.BytesIO(data), min_size=classifier.info.size)
    except (UnreadableImage, OSError, ValueError) as e:
        raise _Rejected(400, f"{name} cannot be decoded ({e}).") from None
    return classifier.preprocess(image)


def _about(classifier: Classifier) -> dict:
    info = classifier.info
    about = {"architecture": info.architecture,
             "classes": [{"id": c, "name": n} for c, n in zip(info.class_ids, info.class_names)],
             "size": info.size, "resize_method": info.resize_method, "mean": list(info.mean),
             "std": list(info.std), "backend": classifier.backend, "accuracy": None}
    metrics = bundle_folder(classifier.path).parent / "metrics.csv"
    with contextlib.suppress(OSError, KeyError, ValueError, csv.Error, IndexError):
        with open(metrics, newline="", encoding="utf-8") as f:
            accuracy = float(list(csv.DictReader(f))[-1]["accuracy"])
        about["accuracy"] = accuracy if math.isfinite(accuracy) else None
    return about


class _JSON(JSONResponse):
    """JSON whose class names and file names may be any the file system gives: a name that
    is not UTF-8 is sent as the JSON escape \\udce9 (`fileio.json_text`), as `clearclass
    predict --json` prints it, where the default encoder fails."""

    def render(self, content: Any) -> bytes:
        return json_text(content, indent=None, separators=(",", ":"),
                         allow_nan=False).encode("utf-8")


def _error(status: int, message: str) -> JSONResponse:
    return _JSON({"detail": message}, status_code=status)


def app_from_environment() -> FastAPI:
    """The app for uvicorn's worker processes: the model and thread count come from
    $CLEARCLASS_SERVE_MODEL and $CLEARCLASS_SERVE_THREADS (set by `serve`)."""
    threads = os.environ.get(THREADS_VARIABLE, "")
    return create_app(os.environ[MODEL_VARIABLE],
                      max_upload_bytes=int(os.environ.get("CLEARCLASS_SERVE_MAX_BYTES",
                                                          MAX_UPLOAD_BYTES)),
                      threads=int(threads) if threads.isdigit() else None)


def serve(model: str | Path, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          max_upload_bytes: int = MAX_UPLOAD_BYTES) -> None:
    """Serve `model` until stopped (Ctrl-C): `workers` processes, cores shared among them."""
    import uvicorn

    load(model, device="cpu")  # a bad model is one clear error here, not one per worker
    os.environ[MODEL_VARIABLE] = str(Path(model).expanduser().resolve())
    os.environ[THREADS_VARIABLE] = str(max(1, available_cores() // workers))
    os.environ["CLEARCLASS_SERVE_MAX_BYTES"] = str(max_upload_bytes)
    uvicorn.run("clearclass.serve:app_from_environment", factory=True, host=host, port=port,
                workers=workers, log_level="info")
