"""A fake web on 127.0.0.1 for the acquire tests, and generated photos to serve.

`FakeWeb` answers GET requests from a table of routes: fixed bodies (with HTTP Range
support), JSON computed from the query, 429s with Retry-After, 5xx, bodies cut off
midway, and answers that never come. It records every request so tests can check what the
client sent. No test touches the internet.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from PIL import Image, ImageDraw


@dataclass
class Seen:
    """One request the fake web received."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    cut_after: int | None = None  # send only this many bytes of the body, then hang up
    hang: bool = False  # never answer


class FakeWeb:
    """Routes by path; each route is a function of the request giving a `Reply`."""

    def __init__(self):
        self.routes: dict[str, Callable[[Seen], Reply]] = {}
        self.seen: list[Seen] = []
        self.release = threading.Event()  # set at teardown: hanging handlers give up
        web = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 - the name http.server calls
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                request = Seen(parts.path, query, {k.lower(): v for k, v in self.headers.items()})
                web.seen.append(request)
                route = web.routes.get(parts.path)
                reply = route(request) if route else Reply(404, b"not found",
                                                          {"Content-Type": "text/plain"})
                if reply.hang:
                    web.release.wait(10)
                    self.close_connection = True
                    return
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                if reply.cut_after is not None:
                    self.send_header("Connection", "close")
                self.end_headers()
                body = reply.body if reply.cut_after is None else reply.body[: reply.cut_after]
                self.wfile.write(body)
                self.wfile.flush()
                if reply.cut_after is not None:
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def hits(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    # Routes ---------------------------------------------------------------------------

    def file(self, path: str, body: bytes, content_type: str = "image/jpeg",
             status: int = 200) -> str:
        """A fixed body; honours `Range: bytes=N-` with a 206, as file servers do."""
        def reply(request: Seen) -> Reply:
            headers = {"Content-Type": content_type, "Accept-Ranges": "bytes"}
            wanted = request.headers.get("range", "")
            if status == 200 and wanted.startswith("bytes="):
                start = int(wanted[6:].split("-")[0])
                if start >= len(body):
                    return Reply(416, b"", {"Content-Range": f"bytes */{len(body)}"})
                headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
                return Reply(206, body[start:], headers)
            return Reply(status, body, headers)

        self.routes[path] = reply
        return self.url + path

    def sequence(self, path: str, *replies: Reply) -> str:
        """A different reply for each request, the last one repeated."""
        queue = list(replies)

        def reply(request: Seen) -> Reply:
            return queue.pop(0) if len(queue) > 1 else queue[0]

        self.routes[path] = reply
        return self.url + path

    def json(self, path: str, answer: Callable[[Seen], tuple[int, object]]) -> str:
        def reply(request: Seen) -> Reply:
            status, obj = answer(request)
            if isinstance(obj, str):
                return Reply(status, obj.encode(), {"Content-Type": "text/plain"})
            return Reply(status, json.dumps(obj).encode(), {"Content-Type": "application/json"})

        self.routes[path] = reply
        return self.url + path

    def hang(self, path: str) -> str:
        self.routes[path] = lambda request: Reply(hang=True)
        return self.url + path


@pytest.fixture
def web():
    fake = FakeWeb()
    yield fake
    fake.close()


def photo(seed: int, size: tuple[int, int] = (128, 96), fmt: str = "JPEG",
          quality: int = 90) -> bytes:
    """A photo of a few random shapes: distinct seeds give perceptually distinct photos."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", size, tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    w, h = size
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w - 10)), int(rng.integers(0, h - 10))
        x1, y1 = x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
    return encode(img, fmt, quality)


def near_copy(data: bytes, scale: float = 0.8, quality: int = 70) -> bytes:
    """The same photo resized and re-encoded: other bytes, the same perceptual hash."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    img = img.resize((round(img.width * scale), round(img.height * scale)))
    return encode(img, "JPEG", quality)


def encode(img: Image.Image, fmt: str = "JPEG", quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buffer.getvalue()


CORRUPT = b"\x00\x01 not an image, whatever the name says " * 20
