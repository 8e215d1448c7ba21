"""`clearclass serve`: the HTTP API (FastAPI's test client), every bad input a 4xx with a
JSON message, the page in a real browser, and a bounded load on loopback with no error."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from clearclass.predict import load  # noqa: E402
from clearclass.serve import create_app  # noqa: E402
from tests.conftest import COLOURS, Server, make_photo  # noqa: E402


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve-photos")
    return {name: make_photo(root / f"{name}.jpg", colour, size=(64, 48), seed=7)
            for name, colour in COLOURS.items()}


@pytest.fixture(scope="module")
def client(trained_run):
    with TestClient(create_app(trained_run / "model", max_upload_bytes=200_000)) as client:
        yield client


def _jpeg(size=(64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_a_photo_gets_the_json_of_predict(client, photos, trained_run):
    with open(photos["red"], "rb") as f:
        answer = client.post("/predict", files={"file": ("red.jpg", f, "image/jpeg")})
    assert answer.status_code == 200
    body = answer.json()
    expected = load(trained_run / "model", device="cpu").predict(photos["red"]).to_dict()
    assert body["image"] == "red.jpg" and body["label"] == expected["label"] == "red"
    assert body["probability"] == pytest.approx(expected["probability"], abs=1e-5)
    assert [t["class_id"] for t in body["top_k"]] == [t["class_id"] for t in expected["top_k"]]


def test_several_photos_give_a_list_with_the_unreadable_one_named(client, photos):
    files = [("files", (f"{n}.jpg", photos[n].read_bytes(), "image/jpeg")) for n in COLOURS]
    files.append(("files", ("notes.txt", b"not a photo", "text/plain")))
    answer = client.post("/predict?top_k=2", files=files)
    assert answer.status_code == 200
    body = answer.json()
    assert [b.get("label") for b in body[:3]] == list(COLOURS)
    assert all(len(b["top_k"]) == 2 for b in body[:3])
    assert body[3]["image"] == "notes.txt" and "not an image" in body[3]["error"]


@pytest.mark.parametrize(("content", "status", "words"), [
    (b"x" * 200_001, 413, "larger than 200,000 bytes"),
    (b"just some notes\n", 415, "not an image"),
    (b"", 400, "is empty"),
    (_jpeg()[:300], 400, "cannot be"),  # a truncated JPEG
])
def test_bad_input_is_a_4xx_with_a_message(client, content, status, words):
    answer = client.post("/predict", files={"file": ("upload.jpg", content, "image/jpeg")})
    assert answer.status_code == status, answer.text
    assert words in answer.json()["detail"]


def test_a_decompression_bomb_is_refused_before_decoding(client):
    bomb = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(bomb, format="PNG")  # 144 MP in a few KB
    assert len(bomb.getvalue()) < 200_000
    answer = client.post("/predict", files={"file": ("bomb.png", bomb.getvalue(), "image/png")})
    assert answer.status_code == 400
    assert "144,000,000 pixels" in answer.json()["detail"]


def test_a_request_without_a_photo_or_with_a_bad_option_is_400(client):
    assert client.post("/predict").status_code == 400
    answer = client.post("/predict?top_k=0", files={"file": ("a.jpg", _jpeg(), "image/jpeg")})
    assert answer.status_code == 400 and "top_k" in answer.json()["detail"]
    huge = client.post("/predict", content=b"", headers={"content-length": str(10**10),
                                                           "content-type": "image/jpeg"})
    assert huge.status_code == 413


def test_health_model_docs_and_page(client, trained_run):
    assert client.get("/health").json()["status"] == "ok"
    about = client.get("/model").json()
    assert [c["id"] for c in about["classes"]] == ["blue", "green", "red"]
    assert about["size"] == 32 and about["backend"] == "onnx"
    assert 0 <= about["accuracy"] <= 1  # from the run's metrics.csv
    assert client.get("/openapi.json").json()["paths"]["/predict"]
    page = client.get("/").text
    assert "<script>" in page and "http://" not in page and "https://" not in page


@pytest.fixture(scope="module")
def server(trained_run, tmp_path_factory):
    """`clearclass serve` as a user starts it, on a free port of loopback."""
    served = Server(trained_run / "model", tmp_path_factory.mktemp("server"))
    yield served.url
    served.stop()


@pytest.mark.slow  # eight clients for five seconds, on a server in a real process
def test_eight_clients_for_five_seconds_get_no_error(server, photos):
    """A bounded load test: every answer a 200 with a label (not a speed test)."""
    import httpx

    data = photos["green"].read_bytes()
    counts, errors = [], []

    def client_loop():
        done = 0
        with httpx.Client(base_url=server, timeout=30) as http:
            stop = time.monotonic() + 5
            while time.monotonic() < stop:
                answer = http.post("/predict", files={"file": ("g.jpg", data, "image/jpeg")})
                if answer.status_code != 200 or answer.json().get("label") != "green":
                    errors.append(answer.text)
                done += 1
        counts.append(done)

    threads = [threading.Thread(target=client_loop) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(counts) == 8 and min(counts) > 0


def test_the_page_predicts_a_photo_in_a_real_browser(server, photos, browser):
    page = browser.new_page()
    errors, outside = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: r.url.startswith(server) or r.url.startswith("blob:")
            or outside.append(r.url))
    page.goto(server + "/")
    page.locator("#choose").set_input_files(str(photos["blue"]))
    page.wait_for_function("document.getElementById('time').textContent.length > 0")
    assert page.locator("#label").inner_text().startswith("blue")
    assert page.locator("#list .bar").count() == 3
    assert "classes" in page.locator("#about").inner_text()
    # A photo dropped on the page, as a user drags one from their files.
    dropped = page.evaluate_handle(
        """bytes => { const t = new DataTransfer();
                      t.items.add(new File([new Uint8Array(bytes)], "red.jpg",
                                           {type: "image/jpeg"}));
                      return t; }""", list(photos["red"].read_bytes()))
    page.dispatch_event("#drop", "drop", {"dataTransfer": dropped})
    page.wait_for_function("document.getElementById('label').textContent"
                           ".startsWith('red')")
    artifacts = Path(__file__).parents[1] / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    page.screenshot(path=str(artifacts / "serve.png"))
    page.close()
    assert errors == [] and outside == []
