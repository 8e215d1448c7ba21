"""HTTP for the acquire commands: one session with timeouts and retries.

Connection errors, read timeouts and 5xx answers are retried with exponential backoff by
urllib3's `Retry`. A 429 (too many requests) is handled here instead, because its
Retry-After can ask for an hour: the client waits what the server asks, at most `max_wait`
seconds, and says so. API keys never leave this module in text: every error message and
every urllib3 log line goes through `redact`.
"""

from __future__ import annotations

import email.utils
import logging
import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from clearclass import __version__
from clearclass.errors import AcquireError
from clearclass.progress import bar, say, warn

TIMEOUT = 30.0  # seconds a server may take to answer, or to send the next bytes
CONNECT_TIMEOUT = 10.0  # seconds to open a connection
RETRIES = 3  # retries of a connection error, timeout or 5xx, and of a 429
BACKOFF = 0.5  # seconds: urllib3 waits 0, 2 x this, 4 x this, ... between retries
MAX_WAIT = 60.0  # seconds: the longest a 429's Retry-After makes us wait
MAX_IMAGE_BYTES = 25 * 2**20  # a photo larger than this is not downloaded
USER_AGENT = f"clearclass/{__version__} (image dataset downloader; python-requests)"

# Query parameters that carry credentials in the APIs we call (Pixabay's key, Flickr's and
# SerpApi's api_key, Unsplash's client_id) and in signed URLs.
_SECRET_PARAMS = re.compile(
    r"(?i)\b(key|api_key|apikey|client_id|access_key|access_token|token|signature)=[^&#\s'\"]+"
)
# Literal secrets shorter than this are not searched for in text: replacing a one-letter
# "key" would mangle every message; such keys are still hidden by the parameter rule above.
_MIN_LITERAL_SECRET = 8
_secrets: set[str] = set()



def register_secret(value: str) -> None:
    """Remember a credential so that `redact` hides it wherever it turns up.

    Each provider registers its API key this way.

    Example:
        register_secret("my-secret-api-key")
        print(redact("the server refused my-secret-api-key"))  # the server refused ***
    """
    if value and len(value) >= _MIN_LITERAL_SECRET:
        _secrets.add(value)


def redact(text: str) -> str:
    """`text` with credentials replaced by `***`: query parameters named like keys, and
    every value passed to `register_secret`.

    Example:
        print(redact("https://pixabay.com/api/?key=abc&q=dog"))
        # https://pixabay.com/api/?key=***&q=dog
    """
    text = _SECRET_PARAMS.sub(lambda m: f"{m.group(1)}=***", text)
    for secret in _secrets:
        text = text.replace(secret, "***")
    return text


class _RedactLogRecords(logging.Filter):
    """urllib3 logs each request line and retry at DEBUG or WARNING, query included."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


# A logger's filters see only its own records, so each urllib3 module that logs URLs gets one.
for _name in ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.poolmanager",
              "urllib3.connection", "urllib3.response"):
    logging.getLogger(_name).addFilter(_RedactLogRecords())


class FetchError(AcquireError):
    """A request got no usable answer. `status` is the HTTP status, None when none came;
    `detail` the start of the body, where APIs explain a refusal."""

    def __init__(self, message: str, status: int | None = None, detail: str = ""):
        super().__init__(redact(message))
        self.status, self.detail = status, redact(detail)


def make_session(retries: int = RETRIES, pool_size: int = 16) -> requests.Session:
    """A `requests.Session` that retries connection errors, timeouts and 5xx with backoff.

    Use it as `make_session().get(url, timeout=(CONNECT_TIMEOUT, TIMEOUT))`. 429 is left to
    `HttpClient.get`, which caps the wait. A 503 is retried with the backoff like any 5xx,
    its Retry-After ignored: urllib3 would sleep for an hour if asked to.

    Example:
        session = make_session(retries=5)
        print(session.get_adapter("https://example.com").max_retries.total)  # 5
    """
    retry = Retry(
        total=retries, connect=retries, read=retries, status=retries, other=0,
        backoff_factor=BACKOFF, backoff_max=MAX_WAIT,
        status_forcelist=(500, 502, 503, 504), allowed_methods=frozenset({"GET", "HEAD"}),
        respect_retry_after_header=False, raise_on_status=False,
    )
    adapter = HTTPAdapter(max_retries=retry, pool_connections=pool_size, pool_maxsize=pool_size)
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


class HttpClient:
    """GET with timeouts, retries and capped 429 waits; errors as `FetchError`.

    For example, `HttpClient(timeout=10).get_json("https://api.pexels.com/v1/search", ...)`
    asks Pexels for a page of results. One client is shared by the threads of a parallel
    download.
    """

    def __init__(self, timeout: float = TIMEOUT, retries: int = RETRIES,
                 max_wait: float = MAX_WAIT, pool_size: int = 16):
        if timeout <= 0:
            raise AcquireError(f"The timeout must be a positive number of seconds; got {timeout}.")
        self.timeout, self.retries, self.max_wait = timeout, retries, max_wait
        self.session = make_session(retries, pool_size)

    def close(self) -> None:
        self.session.close()

    def get(self, url: str, *, params: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None, stream: bool = False) -> requests.Response:
        """The server's answer, whatever its status except 429, which is waited out.

        Raises `FetchError` when no answer comes (after retries), or when the server still
        says 429 after `retries` waits.
        """
        shown, detail = _full_url(url, params), ""
        for attempt in range(self.retries + 1):
            try:
                response = self.session.get(
                    url, params=params, headers=headers, stream=stream,
                    timeout=(min(CONNECT_TIMEOUT, self.timeout), self.timeout))
            except (requests.RequestException, ValueError) as e:
                # ValueError: http.client refuses some URLs (control characters) itself.
                raise FetchError(f"{_describe(e, self.timeout)}: GET {shown}") from None
            if response.status_code != 429:
                return response
            asked = _retry_after(response)
            detail = _excerpt(response.text)
            response.close()
            if attempt == self.retries:
                break
            wait = asked if asked is not None else BACKOFF * 2 ** (attempt + 2)
            waited = min(wait, self.max_wait)
            capped = f"; it asked for {asked:g} s, more than the {self.max_wait:g} s " \
                "clearclass waits at a time" if asked is not None and asked > waited else ""
            warn(f"{urlsplit(url).netloc} answered 429 Too Many Requests; waiting "
                 f"{waited:g} s before trying again{capped}.")
            time.sleep(waited)
        raise FetchError(
            f"{urlsplit(url).netloc} still answers 429 Too Many Requests after "
            f"{self.retries} wait(s) (GET {shown})" + (f": {detail}" if detail else ""),
            status=429, detail=detail)

    def get_json(self, url: str, *, params: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> Any:
        """The JSON body of a 2xx answer; any other status is a `FetchError` with the body's
        first words (APIs explain their refusals there)."""
        response = self.get(url, params=params, headers=headers)
        shown = _full_url(url, params)
        if not response.ok:
            detail = _excerpt(response.text)
            raise FetchError(f"HTTP {response.status_code} {response.reason} from GET {shown}: "
                             f"{detail}", status=response.status_code, detail=detail)
        try:
            return response.json()
        except ValueError:
            raise FetchError(f"GET {shown} answered with something other than JSON: "
                             f"{_excerpt(response.text)}", status=response.status_code) from None

    def fetch_bytes(self, url: str, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
        """The body of a 200 answer, read as a stream and abandoned past `max_bytes`."""
        response = self.get(url, stream=True)
        with response:
            if response.status_code != 200:
                raise FetchError(f"HTTP {response.status_code} {response.reason}",
                                 status=response.status_code)
            kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if kind.startswith("text/"):
                # An HTML page where a photo was promised (common in web search results).
                raise FetchError(f"not an image ({kind})", status=response.status_code)
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise FetchError(f"larger than {max_bytes / 2**20:g} MB", response.status_code)
            data = bytearray()
            try:
                for chunk in response.iter_content(64 * 1024):
                    data += chunk
                    if len(data) > max_bytes:
                        raise FetchError(f"larger than {max_bytes / 2**20:g} MB",
                                         response.status_code)
            except requests.RequestException as e:
                raise FetchError(_describe(e, self.timeout)) from None
            return bytes(data)

    def download_file(self, url: str, dest: Path, *, size: int | None = None) -> Path:
        """Download `url` to `dest` with a progress bar, resuming an interrupted download.

        For example, `client.download_file(url, Path("data/imagewoof2-320.tgz"),
        size=328387740)` fetches Imagewoof's archive. Bytes arrive in `dest.part`; a later
        call asks the server for the rest only (an HTTP Range request), and a connection
        that breaks off is resumed the same way up to `retries` times. `size`, when
        published, is checked before the file is renamed.
        """
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        for attempt in range(self.retries + 1):
            before = part.stat().st_size if part.exists() else 0
            try:
                self._download_part(url, part, size)
                break
            except FetchError as e:
                # Resume at once only when this attempt got somewhere before breaking off.
                grew = part.exists() and part.stat().st_size > before
                if e.status is not None or attempt == self.retries or not grew:
                    kept = part.stat().st_size if part.exists() else 0
                    if kept:
                        raise FetchError(
                            f"{e}. The {kept / 1e6:.1f} MB received so far are kept in {part}; "
                            "run the command again to resume.", e.status) from None
                    raise
                say(f"The download of {dest.name} broke off ({e}); resuming from "
                    f"{part.stat().st_size / 1e6:.1f} MB.")
        got = part.stat().st_size
        if size is not None and got != size:
            part.unlink()
            raise AcquireError(
                f"{url} sent {got:,} bytes; {size:,} were expected. The partial file was "
                "removed; run the command again to download it afresh.")
        os.replace(part, dest)
        return dest

    def _download_part(self, url: str, part: Path, size: int | None) -> None:
        have = part.stat().st_size if part.exists() else 0
        if size is not None and have == size:
            return
        if size is not None and have > size:
            part.unlink()
            have = 0
        response = self.get(url, headers={"Range": f"bytes={have}-"} if have else None,
                            stream=True)
        with response:
            if response.status_code == 416 and have:
                # Nothing left to send from that offset: the part is whole, or not ours.
                if size is None:
                    return
                part.unlink()
                self._download_part(url, part, size)
                return
            if response.status_code == 206 and not _range_starts_at(response, have):
                raise FetchError(f"{url} answered a resumed download with the wrong range "
                                 f"({response.headers.get('Content-Range')}).", status=206)
            if response.status_code == 200:
                have = 0  # the server ignored the Range header and sends the whole file
            elif response.status_code != 206:
                raise FetchError(f"HTTP {response.status_code} {response.reason} from GET "
                                 f"{url}: {_excerpt(response.text)}",
                                 status=response.status_code)
            length = response.headers.get("Content-Length", "")
            total = size if size is not None else \
                (have + int(length) if length.isdigit() else None)
            with open(part, "ab" if have else "wb") as f, \
                    bar(f"{part.name[:-5]} (MB)", round(total / 1e6) if total else 0) as progress:
                progress.advance(round(have / 1e6))
                done_mb = have / 1e6
                try:
                    for chunk in response.iter_content(64 * 1024):
                        f.write(chunk)
                        before, done_mb = done_mb, done_mb + len(chunk) / 1e6
                        progress.advance(int(done_mb) - int(before))
                except requests.RequestException as e:
                    raise FetchError(f"{_describe(e, self.timeout)} (GET {url})") from None


def _retry_after(response: requests.Response) -> float | None:
    """Seconds from a Retry-After header (a number, or an HTTP date), None if absent."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.replace(".", "", 1).isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _range_starts_at(response: requests.Response, offset: int) -> bool:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return match is not None and int(match.group(1)) == offset


def _full_url(url: str, params: dict[str, Any] | None) -> str:
    """The URL as requested, query included, for messages (redacted)."""
    try:
        return redact(requests.Request("GET", url, params=params).prepare().url or url)
    except (requests.RequestException, ValueError):
        return redact(url)  # not a URL requests can send; `get` says so


def _describe(error: BaseException, timeout: float) -> str:
    """A short reason for a failed request; never the exception's text, which holds the URL."""
    text = str(error).lower()
    if isinstance(error, requests.Timeout) or "timed out" in text or "timeout" in text:
        return f"no answer within {timeout:g} s"
    if isinstance(error, requests.exceptions.SSLError):
        return "TLS/SSL error (certificate or protocol)"
    if isinstance(error, requests.exceptions.ChunkedEncodingError) or "incomplete" in text \
            or "broken" in text or "reset by peer" in text:
        return "the connection broke off"
    if isinstance(error, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                          requests.exceptions.InvalidSchema, ValueError)):
        return "not a valid http(s) URL"
    if isinstance(error, requests.ConnectionError):
        if "refused" in text:
            return "connection refused"
        if "name or service not known" in text or "getaddrinfo" in text \
                or "nodename nor servname" in text or "name resolution" in text:
            return "host name not found (no internet connection?)"
        return "could not connect"
    return type(error).__name__


def _excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."
