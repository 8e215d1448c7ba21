from __future__ import annotations

import logging
import time

import pytest

from clearclass.acquire import http
from clearclass.acquire.http import FetchError, HttpClient, redact
from clearclass.errors import AcquireError
from tests.acquire.conftest import Reply


def test_a_5xx_is_retried_and_then_answered(web):
    url = web.sequence("/flaky", Reply(503, b"busy"), Reply(200, b'{"ok": true}',
                                                           {"Content-Type": "application/json"}))
    assert HttpClient(retries=2).get_json(url) == {"ok": True}
    assert len(web.hits("/flaky")) == 2


def test_a_persistent_error_is_one_fetch_error_with_the_answer(web):
    url = web.sequence("/down", Reply(500, b"database on fire"))
    with pytest.raises(FetchError, match="HTTP 500.*database on fire") as error:
        HttpClient(retries=1).get_json(url)
    assert error.value.status == 500
    assert len(web.hits("/down")) == 2  # one try, one retry


def test_429_waits_as_retry_after_says_and_says_so(web, capsys):
    url = web.sequence("/limited", Reply(429, b"slow down", {"Retry-After": "1"}),
                       Reply(200, b"photo", {"Content-Type": "image/jpeg"}))
    started = time.perf_counter()
    assert HttpClient().fetch_bytes(url) == b"photo"
    assert time.perf_counter() - started >= 0.9
    assert "429 Too Many Requests; waiting 1 s" in capsys.readouterr().err


def test_a_long_retry_after_is_capped(web, capsys):
    url = web.sequence("/limited", Reply(429, b"", {"Retry-After": "3600"}),
                       Reply(200, b"photo", {"Content-Type": "image/jpeg"}))
    started = time.perf_counter()
    assert HttpClient(max_wait=0.2).fetch_bytes(url) == b"photo"
    assert time.perf_counter() - started < 2
    err = " ".join(capsys.readouterr().err.split())
    assert "waiting 0.2 s" in err and "asked for 3600 s" in err


def test_429_that_does_not_end_is_an_error(web):
    url = web.sequence("/limited", Reply(429, b"", {"Retry-After": "0"}))
    with pytest.raises(FetchError, match="still answers 429") as error:
        HttpClient(retries=1).fetch_bytes(url)
    assert error.value.status == 429


def test_an_answer_that_never_comes_times_out(web):
    url = web.hang("/never")
    started = time.perf_counter()
    with pytest.raises(FetchError, match=r"no answer within 0.3 s"):
        HttpClient(timeout=0.3, retries=1).fetch_bytes(url)
    assert time.perf_counter() - started < 3
    assert len(web.hits("/never")) == 2  # the read timeout is retried once


def test_fetch_bytes_refuses_pages_and_oversized_files(web):
    page = web.file("/page", b"<html>a page about dogs</html>", "text/html")
    big = web.file("/big.jpg", b"x" * 5000)
    client = HttpClient()
    with pytest.raises(FetchError, match="not an image"):
        client.fetch_bytes(page)
    with pytest.raises(FetchError, match="larger than"):
        client.fetch_bytes(big, max_bytes=1000)
    with pytest.raises(FetchError, match="HTTP 404"):
        client.fetch_bytes(web.url + "/missing.jpg")


def test_connection_refused_is_said_plainly():
    with pytest.raises(FetchError, match="connection refused|could not connect"):
        HttpClient(retries=0).fetch_bytes("http://127.0.0.1:9/x.jpg")


def test_redact_hides_key_parameters_and_registered_secrets():
    assert redact("GET https://pixabay.com/api/?key=abc123&q=dog") == \
        "GET https://pixabay.com/api/?key=***&q=dog"
    assert redact("api_key=zzz&client_id=yyy") == "api_key=***&client_id=***"
    http.register_secret("s3cr3t-value-42")
    assert redact("Authorization: s3cr3t-value-42") == "Authorization: ***"
    http.register_secret("k")  # too short to search for; the parameter rule still applies
    assert redact("pekingese?key=k") == "pekingese?key=***"


def test_urllib3_log_lines_are_redacted(web, caplog):
    url = web.sequence("/api/", Reply(503, b"busy"), Reply(200, b"{}"))
    with caplog.at_level(logging.DEBUG, logger="urllib3"):
        HttpClient(retries=1).get_json(url, params={"key": "topsecretkey99", "q": "dog"})
    assert "/api/?key=***&q=dog" in caplog.text
    assert "topsecretkey99" not in caplog.text
    assert web.hits("/api/")[0].query["key"] == "topsecretkey99"


def test_download_resumes_after_the_connection_breaks_off(web, tmp_path):
    data = bytes(range(256)) * 1600  # 400 kB: the cut falls after a few 64 kB chunks
    served = web.file("/full.tgz", data)
    cut = web.routes["/full.tgz"]
    calls = []

    def first_cut_then_ranges(request):
        calls.append(request.headers.get("range"))
        reply = cut(request)
        if len(calls) == 1:
            reply.cut_after = len(data) // 3
        return reply

    web.routes["/full.tgz"] = first_cut_then_ranges
    dest = HttpClient(timeout=2).download_file(served, tmp_path / "full.tgz", size=len(data))
    assert dest.read_bytes() == data
    # The second request asks only for what the first did not bring (whole chunks kept).
    assert calls[0] is None and len(calls) == 2
    assert 0 < int(calls[1].removeprefix("bytes=").rstrip("-")) <= len(data) // 3
    assert not (tmp_path / "full.tgz.part").exists()


def test_download_continues_an_earlier_part_file(web, tmp_path):
    data = b"0123456789" * 1000
    served = web.file("/a.tar", data)
    (tmp_path / "a.tar.part").write_bytes(data[:4000])
    HttpClient().download_file(served, tmp_path / "a.tar", size=len(data))
    assert (tmp_path / "a.tar").read_bytes() == data
    assert web.hits("/a.tar")[0].headers["range"] == "bytes=4000-"


def test_download_starts_over_when_the_server_ignores_range(web, tmp_path):
    data = b"abcdefghij" * 500
    url = web.sequence("/norange.tar", Reply(200, data, {"Content-Type": "application/x-tar"}))
    (tmp_path / "norange.tar.part").write_bytes(b"stale bytes from elsewhere")
    HttpClient().download_file(url, tmp_path / "norange.tar", size=len(data))
    assert (tmp_path / "norange.tar").read_bytes() == data


def test_download_of_the_wrong_size_is_refused_and_removed(web, tmp_path):
    served = web.file("/short.tar", b"only a few bytes")
    with pytest.raises(AcquireError, match="were expected"):
        HttpClient().download_file(served, tmp_path / "short.tar", size=10_000)
    assert not (tmp_path / "short.tar").exists()
    assert not (tmp_path / "short.tar.part").exists()
