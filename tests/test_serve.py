"""`clearclass serve`: the HTTP API (FastAPI's test client), every bad input a 4xx with a
JSON message, the page in a real browser, and a bounded load on loopback with no error."""

from __future__ import annotations

import io
import re
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from clearclass.predict import load  # noqa: E402
from clearclass.serve import create_app  # noqa: E402
from tests.conftest import (  # noqa: E402
    COLOURS,
    Server,
    make_multi_label_dataset,
    make_photo,
    separating_thresholds,
    with_thresholds,
)


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
    assert about["size"] == 32 and about["backend"] == "onnx" and about["task"] == "single"
    assert all(set(c) == {"id", "name"} for c in about["classes"])  # no thresholds
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


# --- a multi-label model ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stripes(tmp_path_factory) -> list[Path]:
    """Striped photos: blue and red, green, and grey (no label)."""
    csv = make_multi_label_dataset(tmp_path_factory.mktemp("serve-stripes"), per_set=1,
                                   sets=(("blue", "red"), ("green",), ()))
    return sorted(csv.parent.glob("images/*.jpg"))


@pytest.fixture(scope="module")
def multi_client(multi_label_run):
    with TestClient(create_app(multi_label_run / "model")) as client:
        yield client


def test_a_multi_label_photo_gets_the_json_of_predict_with_every_label(
        multi_client, multi_label_run, stripes):
    with open(stripes[0], "rb") as f:
        answer = multi_client.post("/predict?top_k=1", files={"file": ("br.jpg", f, "image/jpeg")})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    expected = load(multi_label_run / "model", device="cpu").predict(stripes[0]).to_dict()
    assert set(body) == {"image", "labels", "class_ids", "predicted", "probabilities"}
    assert body["image"] == "br.jpg"
    assert body["labels"] == expected["labels"] and body["class_ids"] == expected["class_ids"]
    # Every label, whatever top_k, with the probability its sigmoid gives and its threshold.
    assert [t["label"] for t in body["probabilities"]] == [
        t["label"] for t in expected["probabilities"]]
    for got, wanted in zip(body["probabilities"], expected["probabilities"]):
        assert got["probability"] == pytest.approx(wanted["probability"], abs=1e-5)
        assert got["threshold"] == wanted["threshold"]
    assert sum(t["probability"] for t in body["probabilities"]) != pytest.approx(1.0, abs=1e-3)


def test_several_photos_to_a_multi_label_model_give_a_list(multi_client, stripes):
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in stripes]
    files.append(("files", ("notes.txt", b"not a photo", "text/plain")))
    body = multi_client.post("/predict", files=files).json()
    assert [len(b["probabilities"]) for b in body[:3]] == [3, 3, 3]
    assert all(b["labels"] == [t["label"] for t in b["predicted"]] for b in body[:3])
    assert body[3]["image"] == "notes.txt" and "not an image" in body[3]["error"]


def test_the_model_endpoint_says_the_task_and_each_labels_threshold(multi_client,
                                                                   multi_label_run):
    from clearclass.bundle import read_info

    about = multi_client.get("/model").json()
    info = read_info(multi_label_run / "model")
    assert about["task"] == "multi" and about["threshold"] is None  # model.json's own
    assert [(c["id"], c["threshold"]) for c in about["classes"]] == list(
        zip(info.class_ids, info.thresholds))
    assert multi_client.get("/health").json()["classes"] == 3
    assert "3 labels (multi-label)" in multi_client.get("/openapi.json").json()["info"]["title"]


def test_a_threshold_overrides_every_labels_in_the_answers_and_the_model(multi_label_run,
                                                                         stripes):
    """`create_app(threshold=)`, as `serve --threshold`: every label decided at it, and
    GET /model says so (the thresholds it decides with, not model.json's)."""
    from clearclass.bundle import read_info

    assert 0.0 not in read_info(multi_label_run / "model").thresholds
    with TestClient(create_app(multi_label_run / "model", threshold=0.0)) as client:
        about = client.get("/model").json()
        assert about["threshold"] == 0.0
        assert [c["threshold"] for c in about["classes"]] == [0.0, 0.0, 0.0]
        body = client.post("/predict", files={"file": ("grey.jpg", stripes[2].read_bytes(),
                                                       "image/jpeg")}).json()
    # A probability always reaches 0: the grey photo, with no label, gets all three.
    assert sorted(body["labels"]) == ["blue", "green", "red"]
    assert [t["threshold"] for t in body["probabilities"]] == [0.0, 0.0, 0.0]


def test_a_threshold_for_a_single_label_model_is_refused_as_predict_refuses_it(trained_run,
                                                                              photos):
    from clearclass.errors import SettingError
    from tests.conftest import failed, run_cli

    with pytest.raises(SettingError, match="threshold is for multi-label models"):
        create_app(trained_run / "model", threshold=0.3)
    served = run_cli("serve", trained_run / "model", "--threshold", "0.3", "--port", "1")
    failed(served, "--threshold is for multi-label models", "gives one class per photo")
    predicted = run_cli("predict", trained_run / "model", photos["red"], "--threshold", "0.3")
    assert served.stderr == predicted.stderr  # the same line, from the same check


@pytest.fixture(scope="module")
def multi_server(multi_label_run, stripes, tmp_path_factory):
    """`clearclass serve` over a copy of the multi-label model whose thresholds give the
    first striped photo one label and the grey one none."""
    import shutil

    root = tmp_path_factory.mktemp("multi-server")
    folder = shutil.copytree(multi_label_run / "model", root / "model")
    p = load(folder, device="cpu").predict_proba([stripes[0], stripes[2]])
    with_thresholds(folder, separating_thresholds(p[0], p[1]))
    served = Server(folder, root)
    yield served.url, load(folder, device="cpu")
    served.stop()


def test_the_page_shows_the_set_and_every_labels_bar_with_its_threshold(
        multi_server, stripes, browser):
    url, classifier = multi_server
    expected = classifier.predict(stripes[0])
    [chosen] = expected.labels
    page = browser.new_page()
    errors, outside = [], []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # The browser's own request for /favicon.ico logs its 404: not the page's error.
    page.on("console", lambda m: m.type == "error" and not m.location.get(
        "url", "").endswith("/favicon.ico") and errors.append(m.text))
    page.on("request", lambda r: r.url.startswith(url) or r.url.startswith("blob:")
            or outside.append(r.url))
    page.goto(url + "/")
    page.wait_for_function("document.getElementById('about').textContent.includes('labels')")
    assert "3 labels (multi-label)" in page.locator("#about").inner_text()
    page.locator("#choose").set_input_files(str(stripes[0]))
    page.wait_for_function("document.getElementById('time').textContent.length > 0")
    assert page.locator("#label .chip").all_inner_texts() == [
        f"{chosen['label']} {100 * chosen['probability']:.1f}%"]
    bars = page.locator("#list .bar")
    assert bars.count() == 3 and page.locator("#list .bar.over").count() == 1
    assert page.locator("#list .threshold").count() == 3
    for n, t in enumerate(expected.probabilities):  # most likely first, each tick placed
        assert bars.nth(n).locator(".name span").first.inner_text() == t["label"]
        tick = bars.nth(n).locator(".threshold").get_attribute("style")
        assert f"left: {100 * t['threshold']:.1f}%" in tick
        assert "threshold" in bars.nth(n).locator(".name").inner_text()
    artifacts = Path(__file__).parents[1] / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    page.screenshot(path=str(artifacts / "serve-multi-label.png"))
    # The grey photo: no label over its threshold, every bar still drawn.
    page.locator("#choose").set_input_files(str(stripes[2]))
    page.wait_for_function("document.getElementById('label').textContent"
                           ".includes('no label over its threshold')")
    assert page.locator("#label .chip").count() == 0
    assert page.locator("#list .bar").count() == 3 and page.locator("#list .bar.over").count() == 0
    page.close()
    assert errors == [] and outside == []


def test_the_page_shows_the_threshold_serve_was_given(multi_label_run, stripes, browser,
                                                      tmp_path):
    """`clearclass serve MODEL --threshold 0.3` as a user starts it: the page says that every
    label is decided at 30%, and each bar's tick is there."""
    served = Server(multi_label_run / "model", tmp_path, "--threshold", "0.3")
    try:
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(served.url + "/")
        page.wait_for_function("document.getElementById('about').textContent"
                               ".includes('threshold')")
        assert ("threshold 30.0% for every label (serve --threshold)"
                in page.locator("#about").inner_text())
        page.locator("#choose").set_input_files(str(stripes[0]))
        page.wait_for_function("document.getElementById('time').textContent.length > 0")
        ticks = page.locator("#list .threshold")
        assert ticks.count() == 3
        # The browser writes the tick's place back as it reads it: "left: 30%".
        assert [float(re.search(r"left: ([\d.]+)%", ticks.nth(n).get_attribute("style"))[1])
                for n in range(3)] == [30.0] * 3
        assert all("(threshold 30.0%)" in text
                   for text in page.locator("#list .bar .name").all_inner_texts())
        page.close()
        assert errors == []
    finally:
        served.stop()
