"""Names that are HTML and script payloads, opened in a real browser (Debian's chromium,
driven by Playwright): class names from a labels CSV (a slash cannot be in a file name),
photo and folder names on disk. The evaluation report, the cleaning page and the served page
show every name literally; no dialog opens, no payload's script or event handler runs, and
no payload makes the browser log an error (an injected <img src=x> would fail to load).

One tiny run serves the three pages; a copy of the session's multi-label model with the same
names as labels serves the page's multi-label view (the predicted set and every label's bar),
and a notebook's display of its prediction is opened as a page too.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from clearclass.data.sources import display_name
from clearclass.fileio import read_cell
from tests.conftest import Server, make_photo, with_thresholds

# Class names (labels in the CSV, so they may hold a slash), each a different way out.
CLASSES = ("<img src=x onerror=alert(1)>", "</script><script>alert(2)</script>",
           "\"quoted' &amp; {{ 7*7 }} <!--<script>")
# Folder and file names (no slash): their scripts set window.pwned or window.__pwned.
FOLDERS = ("<svg onload=window.pwned=1> one", "<b onmouseover=alert(3)>two", "\"three'")
FILES = ("<img src=x onerror=window.__pwned=1>.png", "\"quoted' name.png",
         "a&amp;b {{ 7*7 }}.png", "<!--<script>.png", "<iframe src=javascript:alert(4)>.png",
         "plain.png")
COLOURS = ((200, 40, 40), (40, 170, 60), (40, 60, 200))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny run on the payload names, with its report and cleaning page written."""
    from clearclass.cleaning import clean
    from clearclass.evaluation import evaluate
    from clearclass.training import train

    root = tmp_path_factory.mktemp("payloads")
    rows = []
    for c, (label, folder, colour) in enumerate(zip(CLASSES, FOLDERS, COLOURS)):
        for i, name in enumerate(FILES):
            make_photo(root / folder / name, colour, seed=10 * c + i)
            # Each name is a validation photo of one class: the report shows them all.
            rows.append((f"{folder}/{name}", label, int(i // 2 == c)))
    # A copy of a photo under another class: the cleaning page lists at least this one.
    (root / FOLDERS[1] / "copy.png").write_bytes((root / FOLDERS[0] / FILES[5]).read_bytes())
    rows.append((f"{FOLDERS[1]}/copy.png", CLASSES[1], 0))
    # And a copy within the third class (both validation photos): whichever photos the heads
    # find mislabelled, a photo of every class is listed, under its class's name.
    (root / FOLDERS[2] / "twin.png").write_bytes((root / FOLDERS[2] / FILES[5]).read_bytes())
    rows.append((f"{FOLDERS[2]}/twin.png", CLASSES[2], 1))
    with (root / "labels.csv").open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("path", "label", "is_valid"), *rows])
    out = root / "run"
    # One class per photo: a payload holds a ';' (&amp;), which would otherwise read as two
    # labels of a multi-label set (task auto).
    train(data=str(root / "labels.csv"), out=str(out), model="test_resnet", pretrained=False,
          item_resize=32, batch_size=8, epochs=0, freeze_epochs=1, learning_rate=1e-2,
          head_speedup=1.0, workers=0, device="cpu", onnx=False, task="single")
    clean(out, device="cpu")
    evaluate(out, device="cpu")
    return out


class Watched:
    """A browser page that records dialogs and console errors."""

    def __init__(self, browser):
        self.page = browser.new_page()
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", self._console)

    def _console(self, message) -> None:
        # Not a payload: the served page's fetch of a photo the server refuses, and the
        # browser's own request for /favicon.ico, log their 4xx.
        refused = (message.location.get("url", "").endswith(("/predict", "/favicon.ico"))
                   and "the server responded with a status of 4" in message.text)
        if message.type == "error" and not refused:
            self.errors.append(f"{message.text} ({message.location.get('url')})")

    def check(self) -> str:
        """No payload ran: the page's text, for the names to be looked up in."""
        page = self.page
        assert self.dialogs == [] and self.errors == []
        assert page.evaluate("[typeof window.pwned, typeof window.__pwned]") == [
            "undefined", "undefined"]
        return page.locator("body").inner_text()


@pytest.fixture
def watched(browser):
    watched = Watched(browser)
    yield watched
    watched.page.close()


def test_the_report_shows_every_name_and_runs_no_payload(run, watched):
    page = watched.page
    page.goto((run / "report" / "index.html").as_uri())
    # The page's script writes names too: a cell's photos, and the tooltip on hover.
    shown = []
    for cell in page.locator("#cells rect").all():
        cell.hover()
        shown.append(page.locator("#tooltip").inner_text())
        cell.click()
        shown.append(page.locator("#cell-photos").inner_text())
    text = watched.check() + "\n".join(shown)
    for name in map(display_name, CLASSES):
        assert name in text and name in "\n".join(shown)
    for name in FILES:  # every one is a validation photo: in the top losses
        assert name in text


def test_the_cleaning_page_shows_every_name_and_runs_no_payload(run, watched):
    from clearclass.cleaning import PAGE_ROWS

    page = watched.page
    page.goto((run / "clean" / "index.html").as_uri())
    text = watched.check()
    listed = [read_cell(r["path"]) for r in csv.DictReader(
        (run / "clean" / "actions.csv").open(encoding="utf-8"))][:PAGE_ROWS]
    assert f"{FOLDERS[1]}/copy.png" in text  # the copy across classes, in its evidence
    for path in listed:
        assert path in text
    for name in map(display_name, CLASSES):
        assert name in text


@pytest.fixture(scope="module")
def server(run, tmp_path_factory):
    """`clearclass serve RUN/model` on a free port of loopback."""
    pytest.importorskip("fastapi")
    served = Server(run / "model", tmp_path_factory.mktemp("server"))
    yield served.url
    served.stop()


def test_the_served_page_shows_every_name_and_runs_no_payload(run, server, watched):
    page = watched.page
    page.goto(server + "/")
    photo = run.parent / FOLDERS[0] / FILES[0]
    page.locator("#choose").set_input_files(str(photo))
    page.wait_for_function("document.getElementById('time').textContent.length > 0")
    bars = page.locator("#list").inner_text()
    for name in map(display_name, CLASSES):  # three classes: each one has its bar
        assert name in bars
    # A refused upload: the server's message names the file, and the page shows it as text.
    page.locator("#choose").set_input_files(
        {"name": FILES[4], "mimeType": "image/png", "buffer": b"not a photo"})
    page.wait_for_function("document.getElementById('error').textContent.length > 0")
    assert FILES[4] in page.locator("#error").inner_text()
    watched.check()


def test_the_names_reach_the_pages_scripts_as_json(run):
    """The report's data, read back from its <script>: the names exactly, nothing lost."""
    page = (run / "report" / "index.html").read_text(encoding="utf-8")
    script = page.split("const DATA = ", 1)[1].split(";\n", 1)[0]
    assert "<" not in script and ">" not in script and "&" not in script
    data = json.loads(script)
    assert sorted(data["classes"]) == sorted(map(display_name, CLASSES))
    # Every validation photo, each hostile name and the copy within the third class.
    assert {p[0] for p in data["photos"].values()} == {*FILES, "twin.png"}


@pytest.fixture(scope="module")
def multi_label_model(multi_label_run, tmp_path_factory) -> Path:
    """A copy of the multi-label model with the payloads as its labels' names: the first two
    at threshold 0 (always predicted: the set shows them), the third at 1."""
    import shutil

    folder = shutil.copytree(multi_label_run / "model", tmp_path_factory.mktemp("ml") / "model")
    return with_thresholds(folder, [0.0, 0.0, 1.0], names=CLASSES)


@pytest.fixture(scope="module")
def multi_label_server(multi_label_model, tmp_path_factory):
    pytest.importorskip("fastapi")
    served = Server(multi_label_model, tmp_path_factory.mktemp("ml-server"))
    yield served.url
    served.stop()


def test_the_served_multi_label_page_shows_every_label_name_as_text(
        run, multi_label_server, watched):
    page = watched.page
    page.goto(multi_label_server + "/")
    page.locator("#choose").set_input_files(str(run.parent / FOLDERS[1] / FILES[5]))
    page.wait_for_function("document.getElementById('time').textContent.length > 0")
    chips = page.locator("#label .chip").all_inner_texts()
    assert len(chips) == 2 and {c.rsplit(" ", 1)[0] for c in chips} == set(CLASSES[:2])
    bars = page.locator("#list").inner_text()
    for name in CLASSES:
        assert name in bars
    assert page.locator("#list .threshold").count() == 3
    watched.check()


def test_a_notebooks_multi_label_prediction_shows_every_label_name_as_text(
        run, multi_label_model, watched, tmp_path):
    import clearclass

    prediction = clearclass.load(multi_label_model).predict(run.parent / FOLDERS[0] / FILES[5])
    html = prediction._repr_html_()
    assert "<script>" not in html and "<img src=x" not in html
    shown = tmp_path / "prediction.html"
    shown.write_text(f"<!doctype html><meta charset=utf-8><body>{html}</body>", encoding="utf-8")
    watched.page.goto(shown.as_uri())
    text = watched.check()
    for name in CLASSES:
        assert name in text
    assert {t["label"] for t in prediction.labels} == set(CLASSES[:2])
