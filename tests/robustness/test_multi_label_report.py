"""The evaluation of a multi-label model under hostile and awkward input: label names that
are markup, script, spreadsheet formulas or not UTF-8 (text in the report, its CSV files and
its figures; nothing runs in a browser); labels on no photo (undefined, never "nan", never a
crash); a test CSV with labels the model does not know (said, in one line); 120 labels (the
report stays readable, and how long it takes is printed, not asserted)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

from clearclass import fileio
from clearclass.evaluation import MultiLabelEvaluation, write_report
from tests.conftest import failed, make_multi_label_dataset, make_photo, run_cli
from tests.evaluation.synthetic import multi_label_groups

SCRIPT = "<script>alert(1)</script>"
COMMENT = "\"quoted' &amp; {{ 7*7 }} <!--<script>"
FORMULA = "=cmd|' /C calc'!A0"
LATIN1 = os.fsdecode(b"caf\xe9")  # a name that is not UTF-8, as a file system may give it
HOSTILE = [SCRIPT, COMMENT, FORMULA, LATIN1, "$x$ \U0001f436 <b>bold</b>",
           "</script><img src=x onerror=window.pwned=1>", "plain", "a\u2028b"]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[MultiLabelEvaluation, Path]:
    folder = tmp_path_factory.mktemp("hostile-labels")
    ev, _ = multi_label_groups(n=len(HOSTILE), photos_count=80, photos=folder / "photos",
                               names=HOSTILE)
    return ev, write_report(ev, folder / "report", top_losses=6)


def _nan_free(text: str) -> None:
    assert not re.search(r"\bnan\b", text, re.IGNORECASE), re.search(
        r".{0,80}\bnan\b.{0,80}", text, re.IGNORECASE | re.DOTALL).group()


def test_hostile_label_names_are_text_in_the_report_and_its_files(hostile):
    ev, report = hostile
    html = (report / "index.html").read_bytes().decode("utf-8")  # valid UTF-8
    assert html.count("<script") == 1  # the page's own; every name's is text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img" not in html.replace('<img src="data:', "") and "<b>bold" not in html
    assert "caf\\xe9" in html  # a byte that is not UTF-8, as \xe9
    assert "{{ 7*7 }}" in html.replace("&#34;", '"').replace("&#39;", "'").replace(
        "&amp;", "&")  # shown, not evaluated
    for name in ("per_label.csv", "confused_labels.csv"):
        rows = list(csv.reader(io.StringIO((report / name).read_bytes().decode("utf-8"),
                                           newline="")))
        for row in rows[1:]:
            for cell in row:  # no cell a spreadsheet would run as a formula
                if cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
                    float(cell)  # -0.5 is a number, not a formula
        if name == "per_label.csv":
            names = [fileio.read_cell(r[2]) for r in rows[1:]]
            assert sorted(names) == sorted(HOSTILE)  # each read back exactly
    results = json.loads((report / "results.json").read_text(encoding="utf-8"))
    assert results["task"] == "multi" and 0 <= results["accuracy"] <= 1
    assert all(name in ev.summary() for name in (SCRIPT, FORMULA))
    shown = ev._repr_html_()
    assert "&lt;script&gt;" in shown and "<script" not in shown


def test_hostile_label_names_run_nothing_in_a_browser(browser, hostile):
    from clearclass.fileio import shown_name

    ev, report = hostile
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    errors, dialogs = [], []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        page.goto((report / "index.html").as_uri())
        assert page.evaluate("typeof DATA") == "object", "the page's script did not run"
        assert page.evaluate("typeof window.pwned") == "undefined"
        names = page.locator("#per-class tbody tr td:nth-child(2)").all_text_contents()
        assert sorted(names) == sorted(shown_name(n) for n in HOSTILE)
        shown = []
        for row in page.locator("#per-class tbody tr").all():  # its photos, named by the script
            row.click()
            shown.append(page.locator("#label-photos").inner_text())
        assert any(SCRIPT in text for text in shown) and any(FORMULA in t for t in shown)
        page.locator("#per-class th").nth(1).click()  # the table still sorts, by name
        assert errors == [] and dialogs == []
    finally:
        page.close()


def test_labels_on_no_photo_are_undefined_not_nan(tmp_path):
    """No photo has any label: no recall, no average precision, no mean of them; the report
    says so and is written whole."""
    paths = [make_photo(tmp_path / "photos" / f"{k}.jpg", seed=k) for k in range(4)]
    probabilities = np.array([[0.7, 0.1], [0.2, 0.1], [0.1, 0.9], [0.3, 0.2]])
    ev = MultiLabelEvaluation(["a", "b"], ["a", "b"], paths, np.zeros((4, 2)), probabilities,
                              [0.5, 0.5])
    report = write_report(ev, tmp_path / "report", top_losses=4)
    html = (report / "index.html").read_text()
    assert html.count(">undefined</td>") == 4  # recall and AP of each label
    assert "undefined: no photo has any label" in html
    assert json.loads((report / "results.json").read_text())["mean_ap"] is None
    for text in (html, (report / "per_label.csv").read_text(), ev.summary(),
                 ev._repr_html_(), (report / "results.json").read_text()):
        _nan_free(text)
    assert "mean average precision undefined" in ev.summary()


def test_a_test_csv_with_labels_the_model_does_not_know(trained_multi_label_run, tmp_path):
    source = make_multi_label_dataset(tmp_path / "unknown", per_set=1, size=(56, 44))
    lines = source.read_text().splitlines()
    # Two labels the model never learned, one of them markup; one photo with only those.
    lines[1] = lines[1].rstrip(",") + ",<b>owl</b>"
    lines[2] += ";=cmd|' /C calc'!A0"
    source.write_text("\n".join(lines) + "\n")
    result = run_cli("evaluate", trained_multi_label_run, "--data", source, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    warning = next(line for line in result.stderr.splitlines() if "not labels of" in line)
    assert "<b>owl</b> (1 photos)" in warning and "=cmd|' /C calc'!A0 (1 photos)" in warning
    assert "as having none of them" in warning
    results = json.loads((trained_multi_label_run / "report-unknown" / "results.json").read_text())
    assert results["photos"] == 8  # every photo evaluated, on the model's labels
    # None of the model's labels: a one-line error, nothing written.
    source.write_text("path,label\n" + "\n".join(
        f"{line.split(',')[0]},cat;dog" for line in lines[1:]) + "\n")
    failed(run_cli("evaluate", trained_multi_label_run, "--data", source, "--device", "cpu"),
           "None of the 2 labels", "label of this model")
    assert json.loads((trained_multi_label_run / "report-unknown" / "results.json").read_text()
                      ) == results  # the report of the last evaluation stays as it was
    source.write_text("path,label\n" + "\n".join(
        f"{line.split(',')[0]}," for line in lines[1:]) + "\n")
    failed(run_cli("evaluate", trained_multi_label_run, "--data", source, "--device", "cpu"),
           "has a label")


@pytest.mark.parametrize("delimiter", [",", '"', "<", "\t"])
def test_a_test_csv_split_on_an_awkward_label_delimiter(trained_multi_label_run, tmp_path,
                                                        delimiter):
    """`evaluate --data --label-delimiter C` with a character that is the CSV's own
    separator or quote, markup, or a tab: the cells (quoted by the csv module) are read as
    the sets they list, as the same CSV written with ';' is."""
    plain = make_multi_label_dataset(tmp_path / "plain", per_set=1, size=(56, 44))
    rows = list(csv.reader(io.StringIO(plain.read_text())))
    assert any(";" in label for _, label in rows[1:])
    awkward = tmp_path / "awkward" / "labels.csv"
    awkward.parent.mkdir()
    with open(awkward, "w", newline="", encoding="utf-8") as f:  # the same photos
        csv.writer(f).writerows([rows[0]] + [[str(plain.parent / p),
                                              label.replace(";", delimiter)]
                                             for p, label in rows[1:]])
    for source, given in ((plain, []), (awkward, ["--label-delimiter", delimiter])):
        result = run_cli("evaluate", trained_multi_label_run, "--data", source, *given,
                         "--device", "cpu")
        assert result.returncode == 0, result.stderr
        assert "not labels of" not in result.stderr  # every label known
    plain_report, awkward_report = (
        json.loads((trained_multi_label_run / f"report-{name}" / "results.json").read_text())
        for name in ("plain", "awkward"))
    assert plain_report["photos"] == awkward_report["photos"] == 8
    assert {k: v for k, v in awkward_report.items() if k != "source"} == {
        k: v for k, v in plain_report.items() if k != "source"}


@pytest.mark.parametrize("delimiter", ["", "||", "; "])
def test_a_label_delimiter_of_other_than_one_character_is_one_line(trained_multi_label_run,
                                                                   tmp_path, delimiter):
    source = make_multi_label_dataset(tmp_path / "test", per_set=1, size=(56, 44))
    failed(run_cli("evaluate", trained_multi_label_run, "--data", source,
                   "--label-delimiter", delimiter),
           f"--label-delimiter must be one character, such as ';' or ' '; got {delimiter!r}")


@pytest.mark.slow  # draws the figures of 120 labels and 2,000 photos
def test_120_labels_make_a_readable_report_in_reasonable_time(tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    ev, _ = multi_label_groups(n=120, photos_count=2000, photos=tmp_path / "photos")
    start = time.perf_counter()
    report = write_report(ev, tmp_path / "report", top_losses=16)
    seconds = time.perf_counter() - start
    size = (report / "index.html").stat().st_size
    print(f"120 labels, 2,000 photos: report in {seconds:.1f} s, index.html {size / 1e6:.1f} MB")
    assert size < 5_000_000, f"{size / 1e6:.1f} MB"
    html = (report / "index.html").read_text()
    assert html.count('<tr class="label"') == 120 and html.count('<tr class="pair"') == 30
    assert "Drawn in colour: the 10 labels of lowest average" in html
    # The precision-recall figure: 10 labels named in its legend, the other 109 in grey.
    figure = ev.plot_precision_recall()
    curves = figure.axes[0]
    assert len(curves.get_legend().get_texts()) == 10
    assert sum(line.get_color() == "0.8" for line in curves.get_lines()) == 109
    # The errors per label: 30 names, legible, none over its neighbour.
    figure = ev.plot_label_errors()
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    labels = figure.axes[0].get_yticklabels()
    assert len(labels) == 30 and min(t.get_fontsize() for t in labels) >= 8
    boxes = sorted((t.get_window_extent(canvas.get_renderer()) for t in labels),
                   key=lambda b: b.y0)
    assert all(not a.overlaps(b) for a, b in zip(boxes, boxes[1:]))
