"""What one request and the whole server may take: upload bytes while they arrive, and the
memory of the photos being decoded at once.

`UploadLimits` is a pure ASGI middleware around the app. It counts every request body while
it streams in, with or without Content-Length, chunked or not, and follows the multipart
parts as they pass (python-multipart's parser, the one Starlette uses): a photo over the
limit, more photos than a request may have, a body over the request's limit, or more upload
bytes held by the process than it allows, are refused (413, or 503 when the server is
busy) at the chunk that crosses the line, before Starlette writes that chunk to its
temporary files. The answer is JSON, as every other error of the server; the rest of the
body is then read and thrown away for a few seconds (nginx's "lingering close"), so that a
client still sending reads the answer instead of a reset connection.

`MemoryBudget` is a semaphore weighted by bytes: each photo holds its estimated decoding
memory (`data.decode.decode_cost`) while it is decoded, and waits, first come first
served, while the photos being decoded already hold the budget. So the photos of one
request and of concurrent requests together never decode more than the budget at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time

from fastapi import HTTPException
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

MULTIPART_OVERHEAD = 1_000_000  # bytes: part headers and boundaries, and any text fields
SMALL_BODY = 1_000_000  # bytes: the most a body that is not multipart/form-data may have
LINGER_SECONDS = 5.0  # reading the rest of a refused body, so that the client reads the 413
# Upload bytes that the requests in progress may hold at once (in memory for photos under
# 1 MB, in Starlette's temporary files above), in requests of the largest size: beyond, 503.
HELD_REQUESTS = 2


def largest_request(max_photo_bytes: int, max_photos: int) -> int:
    """The most bytes a request's body may have: its photos and the multipart around them."""
    return max_photos * max_photo_bytes + MULTIPART_OVERHEAD


class Refused(HTTPException):
    """A request refused for its size while its body arrives (an HTTPException, so that
    FastAPI passes it on untouched from the form parsing it interrupts)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        headers = {"retry-after": str(retry_after)} if retry_after else None
        super().__init__(status, message, headers=headers)


class UploadLimits:
    """ASGI middleware: request bodies bounded while they stream (see the module's doc)."""

    def __init__(self, app, *, max_photo_bytes: int, max_photos: int,
                 max_held_bytes: int | None = None):
        self.app = app
        self.max_photo_bytes, self.max_photos = max_photo_bytes, max_photos
        self.max_request_bytes = largest_request(max_photo_bytes, max_photos)
        self.max_held_bytes = max(max_held_bytes or HELD_REQUESTS * self.max_request_bytes,
                                  self.max_request_bytes)
        self.held = 0  # bytes of the bodies of the requests in progress in this process

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = _Body(self, scope, receive)
        try:
            refusal = body.refusal_from_headers()
            if refusal is not None:
                # Before a byte of the body is read: a 2 GB upload is refused at once.
                await body.answer(refusal, send)
                return
            try:
                await self.app(scope, body.counted_receive, body.watched_send(send))
            except Refused as refusal:  # raised where the app did not turn it into an answer
                if body.started:
                    raise
                await body.answer(refusal, send)
        finally:
            self.held -= body.counted


class _Body:
    """One request's body as it arrives: counted, its multipart parts followed."""

    def __init__(self, limits: UploadLimits, scope, receive):
        self.limits, self.receive = limits, receive
        self.headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                        for k, v in scope.get("headers", [])}
        self.counted = 0  # bytes received (and counted in limits.held)
        self.refused: Refused | None = None
        self.started = False  # the response has begun
        self.ended = False  # the body has arrived whole (or the client went away)
        self.parts = _Parts(limits, self.headers.get("content-type", ""))
        self.limit = limits.max_request_bytes if self.parts.multipart else SMALL_BODY

    def refusal_from_headers(self) -> Refused | None:
        length = self.headers.get("content-length", "")
        if not length.isdigit():
            return None
        if int(length) > self.limit:
            return self._too_large(int(length))
        if self.limits.held + int(length) > self.limits.max_held_bytes:
            return self._busy()
        return None

    def _too_large(self, count: int, more: bool = False) -> Refused:
        amount = f"more than {count:,}" if more else f"{count:,}"
        if not self.parts.multipart:
            return Refused(413, f"The request has {amount} bytes; send photos as "
                                "multipart/form-data (curl -F file=@photo.jpg URL/predict); "
                                f"other bodies may have {SMALL_BODY:,}.")
        return Refused(413, f"The request has {amount} bytes; a photo may have "
                            f"{self.limits.max_photo_bytes:,} and a request "
                            f"{self.limits.max_photos} photos (clearclass serve "
                            "--max-upload-mb).")

    def _busy(self) -> Refused:
        return Refused(503, "The server is receiving more uploads than it holds at once "
                            f"({self.limits.max_held_bytes:,} bytes); try again in a moment.",
                       retry_after=2)

    async def counted_receive(self):
        if self.refused is not None:
            raise self.refused  # the app gets nothing more of a refused body
        message = await self.receive()
        self.ended = message["type"] != "http.request" or not message.get("more_body", False)
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            self.counted += len(chunk)
            self.limits.held += len(chunk)
            try:
                if self.counted > self.limit:
                    raise self._too_large(self.limit, more=True)
                self.parts.feed(chunk)
                if self.limits.held > self.limits.max_held_bytes:
                    raise self._busy()
            except Refused as refusal:
                self.refused = refusal
                raise
        return message

    def watched_send(self, send):
        async def watched(message):
            if message["type"] == "http.response.start":
                self.started = True
                if self.refused is not None:
                    message = {**message, "headers": [*message.get("headers", []),
                                                      (b"connection", b"close")]}
            elif (message["type"] == "http.response.body" and self.refused is not None
                  and not message.get("more_body", False)):
                # The answer goes out now; the connection ends after the lingering read.
                await send({**message, "more_body": True})
                await self.drain()
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        return watched

    async def answer(self, refusal: Refused, send) -> None:
        """The JSON answer to a refused request, sent by the middleware itself."""
        self.refused, self.started = refusal, True
        content = json.dumps({"detail": refusal.detail}).encode()
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(content)).encode()), (b"connection", b"close")]
        headers += [(k.encode(), v.encode()) for k, v in (refusal.headers or {}).items()]
        await send({"type": "http.response.start", "status": refusal.status_code,
                    "headers": headers})
        await send({"type": "http.response.body", "body": content, "more_body": True})
        await self.drain()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def drain(self) -> None:
        """Read and drop the rest of a refused body, for LINGER_SECONDS at most."""
        deadline = time.monotonic() + LINGER_SECONDS
        with contextlib.suppress(TimeoutError, OSError):
            while not self.ended and time.monotonic() < deadline:
                message = await asyncio.wait_for(self.receive(), deadline - time.monotonic())
                self.ended = (message["type"] != "http.request"
                              or not message.get("more_body", False))


class _Parts:
    """The multipart parts of a body as its chunks pass: photos counted, sizes followed."""

    def __init__(self, limits: UploadLimits, content_type: str):
        self.limits = limits
        kind, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        self.multipart = kind == b"multipart/form-data" and bool(boundary)
        self.parser = None
        if self.multipart:
            self.parser = MultipartParser(boundary, {
                "on_part_begin": self._begin, "on_part_data": self._data,
                "on_header_field": self._header_field, "on_header_value": self._header_value,
                "on_header_end": self._header_end})
        self.photos, self.size, self.name = 0, 0, ""
        self._field, self._value, self._disposition = b"", b"", b""
        self.refusal: Refused | None = None

    def feed(self, chunk: bytes) -> None:
        if self.parser is None or not chunk:
            return
        try:
            self.parser.write(chunk)
        except FormParserError:
            self.parser = None  # Starlette's parser says what is wrong with it (400)
        if self.refusal is not None:
            raise self.refusal

    def _begin(self) -> None:
        self.size, self.name, self._disposition = 0, "", b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        if self._field.lower() == b"content-disposition":
            _, options = parse_options_header(self._value)
            if b"filename" in options:
                self.photos += 1
                self.name = options[b"filename"].decode("utf-8", "replace")
                if self.photos > self.limits.max_photos and self.refusal is None:
                    self.refusal = Refused(413, f"More than {self.limits.max_photos} photos; "
                                                "a request may have "
                                                f"{self.limits.max_photos}.")
        self._field, self._value = b"", b""

    def _data(self, data: bytes, start: int, end: int) -> None:
        self.size += end - start
        if self.size > self.limits.max_photo_bytes and self.refusal is None:
            self.refusal = Refused(413, f"{self.name or 'A part of the request'} is larger "
                                        f"than {self.limits.max_photo_bytes:,} bytes, the "
                                        "limit for one photo (clearclass serve "
                                        "--max-upload-mb).")


class MemoryBudget:
    """A semaphore weighted by bytes, first come first served (see the module's doc)."""

    def __init__(self, total: int):
        self.total, self.used = total, 0
        self.waiting: collections.deque[tuple[int, asyncio.Future]] = collections.deque()

    @contextlib.asynccontextmanager
    async def hold(self, amount: int):
        """Hold `amount` bytes of the budget (at most all of it) while the block runs."""
        amount = min(amount, self.total)
        if not self.waiting and self.used + amount <= self.total:
            self.used += amount
        else:
            entry = (amount, asyncio.get_running_loop().create_future())
            self.waiting.append(entry)
            try:
                await entry[1]
            except asyncio.CancelledError:
                if entry[1].done() and not entry[1].cancelled():
                    self._release(amount)  # granted, then cancelled before it could run
                else:
                    with contextlib.suppress(ValueError):  # _wake may have dropped it
                        self.waiting.remove(entry)
                    self._wake()
                raise
        try:
            yield
        finally:
            self._release(amount)

    def _release(self, amount: int) -> None:
        self.used -= amount
        self._wake()

    def _wake(self) -> None:
        while self.waiting and self.used + self.waiting[0][0] <= self.total:
            amount, future = self.waiting.popleft()
            if not future.done():
                self.used += amount
                future.set_result(None)
