"""Names as the file system gives them, through the real command line: a file and a class
folder whose names are not UTF-8 (the bytes b"caf\\xe9.jpg"), class names a spreadsheet
would run as formulas (=1+2), that an HTML parser would read as markup (<!--<script>) or
that the font lacks (an emoji). Every command works, every file it writes is valid UTF-8
and keeps the name (readable in CSV files and pages, exact in JSON and where a path is read
back), and nothing prints a traceback or a warning about glyphs."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clearclass import fileio
from tests.conftest import make_photo, run_cli, tiny_options

pytestmark = pytest.mark.slow  # real processes, one per command, each importing PyTorch

SCRIPT, FORMULA, EMOJI = "<!--<script>", "=1+2", "\U0001f436 dog"
LATIN1 = os.fsdecode(b"\xe9t\xe9")  # a class folder named in Latin-1: 'ét\xe9' is not UTF-8
CAFE = os.fsdecode(b"caf\xe9.jpg")
BAD = os.fsdecode(b"bad\xff.jpg")  # not an image either


TINY = [*tiny_options(epochs=0), "--quiet"]


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """A command's output as bytes, from a real process: it must be valid UTF-8 (which
    `text=True` would hide) and hold no warning (which pytest would catch in this one)."""
    return run_cli(*args, env=env, in_process=False, text=False)


def _utf8(path: Path) -> str:
    """The text of a file clearclass wrote: valid UTF-8, no lone surrogate."""
    return path.read_bytes().decode("utf-8")


def _spreadsheet_safe(path: Path) -> list[list[str]]:
    """The rows of a CSV file, checked: no text cell a spreadsheet would run as a formula."""
    rows = list(csv.reader(io.StringIO(_utf8(path), newline="")))
    for row in rows:
        for cell in row:
            if cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
                float(cell)  # -0.5 is a number, not a formula
    return rows


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("names") / "photos"
    colours = {SCRIPT: (128, 128, 128), FORMULA: (200, 40, 40), LATIN1: (40, 170, 60),
               EMOJI: (40, 60, 200)}
    for c, (name, colour) in enumerate(colours.items()):
        for i in range(6):
            make_photo(root / name / f"{i:03d}.jpg", colour, seed=100 * c + i)
    os.rename(root / FORMULA / "000.jpg", root / FORMULA / CAFE)
    (root / LATIN1 / BAD).write_bytes(b"not a photo")
    return root


@pytest.fixture(scope="module")
def run(data) -> Path:
    """The run, trained by the command in this process: what is checked of it is the files
    it wrote (the commands whose output is checked below run in real processes)."""
    out = data.parent / "run"
    result = run_cli("train", data, "--out", out, *TINY)
    assert result.returncode == 0, result.stderr
    return out


def test_a_run_keeps_names_that_are_not_utf8_readable_and_exact(data, run):
    split = _spreadsheet_safe(run / "split.csv")
    paths = {fileio.read_cell(r[0]) for r in split[1:]}
    assert str(data / FORMULA / CAFE) in paths  # read back: the same bytes
    assert f"{data / FORMULA}/caf\\xe9.jpg" in _utf8(run / "split.csv")  # and readable
    assert "'=1+2" in {r[1] for r in split[1:]}
    skipped = _spreadsheet_safe(run / "skipped.csv")
    assert [fileio.read_cell(r[0]) for r in skipped[1:]] == [str(data / LATIN1 / BAD)]
    model = json.loads(_utf8(run / "model" / "model.json"))
    assert LATIN1 in [c["id"] for c in model["classes"]]
    assert os.fsdecode(os.fsencode(json.loads(_utf8(run / "config.json"))["config"]["data"])) \
        == str(data)


@pytest.fixture(scope="module")
def reports(data, run) -> list[Path]:
    """RUN/report (the validation photos) and RUN/report-photos (`evaluate --data`)."""
    from concurrent.futures import ThreadPoolExecutor

    runs = (((), "report"), (("--data", data), f"report-{data.name}"))
    with ThreadPoolExecutor(2) as pool:  # two processes at once: most of each is importing
        results = list(pool.map(lambda a: _run("evaluate", run, "--device", "cpu", *a[0]),
                                runs))
    for result in results:
        assert result.returncode == 0, result.stderr.decode("utf-8", "replace")
        assert b"Glyph" not in result.stderr
    return [run / folder for _, folder in runs]


def test_evaluate_and_evaluate_data_write_valid_reports(reports):
    for report in reports:
        assert "\\xe9t\\xe9" in _utf8(report / "index.html")
        rows = _spreadsheet_safe(report / "per_class.csv")
        assert {fileio.read_cell(r[1]) for r in rows[1:]} == {SCRIPT, FORMULA, LATIN1, EMOJI}
        _spreadsheet_safe(report / "most_confused.csv")
    assert "caf\\xe9.jpg" in _utf8(reports[1] / "index.html")


def test_predict_json_gives_the_path_and_the_class_back_exactly(data, run):
    from concurrent.futures import ThreadPoolExecutor

    command = ("predict", run / "model", data / FORMULA, data / LATIN1, "--device", "cpu",
               "--top-k", "4")
    # As JSON; and printed to terminals that cannot show such names: escaped, no traceback.
    envs = ({}, {"PYTHONIOENCODING": "ascii:strict"}, {"LANG": "C", "LC_ALL": "C"})
    flags = (("--json",), (), ("--json",))
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda a: _run(*command, *a[0], env=a[1]), zip(flags, envs)))
    answers = json.loads(results[0].stdout.decode("utf-8"))
    images = {os.fsencode(a["image"]) for a in answers}
    assert os.path.join(os.fsencode(data / FORMULA), b"caf\xe9.jpg") in images
    assert os.path.join(os.fsencode(data / LATIN1), b"bad\xff.jpg") in images  # an error
    labels = {os.fsencode(t["class_id"]) for a in answers for t in a.get("top_k", [])}
    assert b"\xe9t\xe9" in labels
    for printed in results:
        assert printed.returncode == 3, printed.stderr  # bad\xff.jpg is not a photo
        assert b"bad" in printed.stderr and b"\xff" not in printed.stderr
        assert b"\xe9" not in printed.stdout
        printed.stdout.decode("utf-8")
    assert json.loads(results[2].stdout.decode("utf-8")) == answers


def test_serve_answers_with_a_class_named_in_latin1(data, run):
    from fastapi.testclient import TestClient

    from clearclass.serve import create_app

    with TestClient(create_app(run / "model")) as client:
        about = client.get("/model")
        assert about.status_code == 200, about.text  # was a 500: surrogates not allowed
        classes = json.loads(about.content.decode("utf-8"))["classes"]
        assert LATIN1 in [c["id"] for c in classes]
        with open(data / FORMULA / CAFE, "rb") as f:
            answer = client.post("/predict", params={"top_k": 4},
                                 files={"file": ("photo.jpg", f, "image/jpeg")})
        assert answer.status_code == 200, answer.text
        top = json.loads(answer.content.decode("utf-8"))["top_k"]
        assert LATIN1 in [t["class_id"] for t in top]


def test_clean_apply_and_undo_move_a_photo_named_in_latin1(data, run):
    before = {d: sorted(os.listdir(os.fsencode(data / d))) for d in os.listdir(data)}
    result = _run("clean", run, "--device", "cpu", env={"PYTHONIOENCODING": "ascii:strict"})
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")
    rows = _spreadsheet_safe(run / "clean" / "actions.csv")
    assert f"{LATIN1}/{BAD}" in {fileio.read_cell(r[0]) for r in rows[1:]}  # unreadable
    _utf8(run / "clean" / "index.html")
    # An edited list as clearclass writes one: escaped names, formulas quoted.
    actions = run / "clean" / "edited.csv"
    actions.write_text("path,label,action,new_label\n"
                       f"'=1+2/caf\\xe9.jpg,'=1+2,relabel,{EMOJI}\n"
                       "'=1+2/001.jpg,'=1+2,delete,\n", encoding="utf-8")
    applied = _run("clean", run, "--apply", actions)
    assert applied.returncode == 0, applied.stderr.decode("utf-8", "replace")
    assert b"caf\xe9.jpg" in os.listdir(os.fsencode(data / EMOJI))
    assert b"caf\xe9.jpg" not in os.listdir(os.fsencode(data / FORMULA))
    assert "001.jpg" not in os.listdir(data / FORMULA)
    json.loads(_utf8(run / "clean" / "applied.json"))
    undone = _run("clean", run, "--undo")
    assert undone.returncode == 0, undone.stderr.decode("utf-8", "replace")
    assert {d: sorted(os.listdir(os.fsencode(data / d))) for d in os.listdir(data)} == before


def test_explore_and_verify_show_every_name(data, tmp_path):
    result = _run("explore", data, "--out", tmp_path / "explore")
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")
    assert b"Glyph" not in result.stderr and b"Warning" not in result.stderr
    rows = _spreadsheet_safe(tmp_path / "explore" / "unreadable.csv")
    assert [fileio.read_cell(r[0]) for r in rows[1:]] == [str(data / LATIN1 / BAD)]
    assert "bad\\xff.jpg" in result.stdout.decode("utf-8")
    verified = _run("verify", data, env={"PYTHONIOENCODING": "ascii:strict"})
    assert verified.returncode == 0, verified.stderr
    assert b"bad\\xff.jpg" in verified.stdout + verified.stderr


def test_an_emoji_class_draws_without_a_glyph_warning(tmp_path):
    for name in ("\U0001f436", "\U0001f431"):
        for i in range(3):
            make_photo(tmp_path / "pets" / name / f"{i}.jpg", seed=i)
    result = run_cli("explore", tmp_path / "pets", "--out", tmp_path / "out",
                     in_process=False)
    assert result.returncode == 0, result.stderr
    assert "Glyph" not in result.stderr and "UserWarning" not in result.stderr, result.stderr


def test_show_batch_and_explore_arguments_of_the_wrong_type_are_one_line_errors(tmp_path):
    import clearclass as api
    from clearclass.errors import SettingError

    for call, words in ((lambda: api.show_batch(tmp_path, n="9"), "n must be a whole number"),
                        (lambda: api.show_batch(tmp_path, n=2.5), r"got 2\.5 \(float\)"),
                        (lambda: api.show_batch(tmp_path, n=True), "n must be"),
                        (lambda: api.explore(tmp_path, out=123), "out must be a folder"),
                        (lambda: api.explore(tmp_path, workers="2"), "workers must be")):
        with pytest.raises(SettingError, match=words) as caught:
            call()
        assert "\n" not in str(caught.value)


names = st.lists(st.sampled_from(list("\\xXuUdc5e9aF0'=+-@\t\r,\" /") + [
    "\udce9", "\udc80", "\udcff", "\ud83d", "\udc41", "\xe9", "\u2028"]), max_size=12).map("".join)


@settings(max_examples=2000, deadline=None)
@given(names)
def test_every_name_comes_back_from_a_csv_cell_and_from_json(name):
    cell = fileio.csv_cell(name)
    cell.encode("utf-8")
    assert fileio.read_cell(cell) == name
    assert fileio.unescape_name(fileio.escape_name(name)) == name
    text = fileio.json_text([name])
    text.encode("utf-8")
    assert json.loads(text) == [name] or "\ud83d" in name  # a pair joins; fsdecode never
    # makes one
    if cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
        float(cell)  # a number is left as it is


def test_numbers_are_not_quoted_as_formulas():
    assert [fileio.csv_cell(v) for v in ("-0.5", "-1e-05", "+3", "-inf", -2, 0.5)] == [
        "-0.5", "-1e-05", "+3", "-inf", -2, 0.5]
    assert [fileio.csv_cell(v) for v in ("=1+2", "-2+3", "@SUM(A1)", "'=x", "+")] == [
        "'=1+2", "'-2+3", "'@SUM(A1)", "''=x", "'+"]


# --- the report's page in a real browser -------------------------------------------------------
# Inside <script>, "<!--<script>" puts the HTML parser in a state where the script's own
# "</script>" no longer ends it: the page lost its script (no tooltip, no sorting, no error).

@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.errors, page.dialogs = [], []
    page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    yield page
    page.close()


def _check_the_script_works(page, index: Path, names: list[str]) -> None:
    page.goto(index.as_uri())
    assert page.evaluate("typeof DATA") == "object", "the page's script did not run"
    assert sorted(page.evaluate("DATA.classes")) == sorted(names)
    # A tooltip on hover, naming the classes as they are.
    cell = page.locator("#cells rect").first
    cell.scroll_into_view_if_needed()
    box = cell.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    assert page.locator("#tooltip").is_visible()
    assert any(f"Actual: {name}" in page.locator("#tooltip").inner_text() for name in names)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    assert page.locator("#cell-photos").is_visible()  # its photos, on click
    # The per-class table sorts.
    header = page.locator("#per-class th").nth(5)  # support
    values = "els => els.map(r => parseFloat(r.cells[5].dataset.value))"
    header.click()
    down = page.locator("#per-class tbody tr").evaluate_all(values)
    assert down == sorted(down, reverse=True)
    header.click()
    assert page.locator("#per-class tbody tr").evaluate_all(values) == sorted(down)
    assert page.errors == [] and page.dialogs == []


def test_the_report_of_a_class_named_like_markup_keeps_its_script(page, reports):
    names = [SCRIPT, FORMULA, "\\xe9t\\xe9", EMOJI]  # a byte that is not UTF-8 as \\xe9
    for report in reports:
        _check_the_script_works(page, report / "index.html", names)


def test_class_names_that_close_the_script_or_break_its_lines_run_nothing(page, tmp_path):
    import numpy as np

    from clearclass.evaluation import Evaluation, write_report

    names = ["</script><script>alert(1)</script>", SCRIPT, "a\u2028b\u2029c & <b>d</b>",
             "<img src=x onerror=alert(2)>"]
    targets = np.repeat(np.arange(4), 3)
    probabilities = np.full((12, 4), 0.1)
    probabilities[np.arange(12), (targets + np.arange(12) % 2) % 4] = 0.7
    paths = [make_photo(tmp_path / "photos" / f"{k}.jpg", seed=k) for k in range(12)]
    report = write_report(Evaluation([f"c{i}" for i in range(4)], names, paths, targets,
                                     probabilities), tmp_path / "report")
    _check_the_script_works(page, report / "index.html", names)
