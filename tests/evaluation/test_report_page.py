"""The HTML report of a 120-class evaluation, opened in a real browser (Debian's chromium,
driven by Playwright; never a downloaded browser): it makes no request, logs no error, names
every class legibly, explains a cell on hover, shows a cell's photos on click, sorts its
per-class table. A screenshot is kept in test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import re

import pytest

from clearclass.evaluation import write_report
from tests.conftest import REPO
from tests.evaluation.synthetic import confused_groups

ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report-page")
    ev, _ = confused_groups(photos=folder / "photos")
    return ev, write_report(ev, folder / "report", top_losses=8)


@pytest.fixture
def page(browser, report):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.errors, page.requests = [], []
    page.on("console", lambda m: m.type in ("error", "warning") and page.errors.append(m.text))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("request", lambda r: page.requests.append(r.url))
    page.goto((report[1] / "index.html").as_uri())
    yield page
    page.close()


def _cell_centre(page, row: int, column: int) -> tuple[float, float]:
    """Where to point at a non-empty cell, scrolled into view (the matrix scrolls)."""
    cell = float(page.locator("#matrix").get_attribute("data-cell"))
    rect = page.locator(f'#cells rect[x="{column * cell:g}"][y="{row * cell:g}"]')
    rect.scroll_into_view_if_needed()
    box = rect.bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def _most_confused_cell(ev):
    """The most frequent mistake, and its row and column in the page's matrix."""
    pair, order = ev.most_confused()[0], ev.view_order()
    return (pair, order.index(ev.class_names.index(pair.actual)),
            order.index(ev.class_names.index(pair.predicted)))


def test_the_page_makes_no_request_and_logs_no_error(page, report):
    outside = [u for u in page.requests if not u.startswith(("data:", "file:"))]
    assert outside == [] and page.errors == []
    assert [u for u in page.requests if u.startswith("file:")] == [
        (report[1] / "index.html").as_uri()]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report-120-classes.png"), full_page=False)


def test_every_class_is_named_legibly(page, report):
    ev = report[0]
    rows = page.locator("#matrix text.row")
    assert rows.count() == 120
    names = rows.evaluate_all("els => els.map(e => e.firstChild.textContent)")
    assert names == [ev.class_names[i] for i in ev.view_order()]
    sizes = rows.evaluate_all("els => els.map(e => parseFloat(getComputedStyle(e).fontSize))")
    assert min(sizes) >= 10
    boxes = rows.evaluate_all("els => els.map(e => e.getBoundingClientRect())"
                              ".map(r => [r.top, r.bottom])")
    assert all(a[1] <= b[0] + 0.5 for a, b in zip(boxes, boxes[1:]))  # no overlap


def test_hovering_a_cell_tells_actual_predicted_count_and_rate(page, report):
    pair, row, column = _most_confused_cell(report[0])
    page.mouse.move(*_cell_centre(page, row, column))
    tip = page.locator("#tooltip")
    assert tip.is_visible()
    text = tip.inner_text()
    assert f"Actual: {pair.actual}" in text and f"Predicted: {pair.predicted}" in text
    assert f"Count: {pair.count} of 20" in text
    assert re.search(rf"Rate: {pair.count * 5}(\.0)?% of the actual class", text), text


def test_clicking_a_cell_shows_its_photos(page, report):
    pair, row, column = _most_confused_cell(report[0])
    assert not page.locator("#cell-photos").is_visible()
    page.mouse.click(*_cell_centre(page, row, column))
    assert page.locator("#cell-photos").is_visible()
    assert f"{pair.count} photos" in page.locator("#cell-title").inner_text()
    thumbs = page.locator("#cell-thumbs img")
    assert thumbs.count() == pair.count
    assert thumbs.first.get_attribute("src").startswith("data:image/jpeg;base64,")
    assert thumbs.first.evaluate("img => img.complete && img.naturalWidth > 0")
    page.locator("#cell-photos").screenshot(path=str(ARTIFACTS / "report-cell-photos.png"))
    # A diagonal cell shows a few of its photos, the least sure first, and says so.
    page.mouse.click(*_cell_centre(page, 0, 0))
    assert "(showing 6," in page.locator("#cell-title").inner_text()
    assert page.locator("#cell-thumbs img").count() == 6


def test_a_row_of_the_most_confused_table_shows_its_photos(page, report):
    pair = report[0].most_confused()[0]
    page.locator("tr.pair").first.click()
    assert page.locator("#cell-title").inner_text().startswith(
        f"Actual {pair.actual}, predicted {pair.predicted}: {pair.count} photos")


@pytest.mark.parametrize("column", ["precision", "recall", "F1", "support"])
def test_the_per_class_table_sorts_by_its_columns(page, report, column):
    index = ["#", "class", "precision", "recall", "F1", "support"].index(column)
    header = page.locator("#per-class th").nth(index)
    values = f"els => els.map(r => parseFloat(r.cells[{index}].dataset.value))"
    header.click()
    down = page.locator("#per-class tbody tr").evaluate_all(values)
    assert down == sorted(down, reverse=True)
    header.click()
    up = page.locator("#per-class tbody tr").evaluate_all(values)
    assert up == sorted(up)
