"""A multi-label model's HTML report opened in a real browser (Debian's chromium, driven by
Playwright): it makes no request and logs no error, lists every label in a table that sorts
(an undefined figure sorting below every number), shows a label's missed and wrongly given
photos on a click, and a pair's photos. A screenshot is kept in test-artifacts/."""

from __future__ import annotations

import pytest

from clearclass.evaluation import write_report
from tests.conftest import REPO
from tests.evaluation.synthetic import multi_label_groups

ARTIFACTS = REPO / "test-artifacts"
COLUMNS = ["#", "label", "threshold", "precision", "recall", "F1", "AP", "support", "found",
           "missed", "wrongly given", "given instead"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multi-label-page")
    ev, _ = multi_label_groups(n=12, photos_count=240, photos=folder / "photos")
    return ev, write_report(ev, folder / "report", top_losses=8)


def _open(browser, index):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.errors, page.requests = [], []
    page.on("console", lambda m: m.type in ("error", "warning") and page.errors.append(m.text))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("request", lambda r: page.requests.append(r.url))
    page.goto(index.as_uri())
    return page


@pytest.fixture
def page(browser, report):
    page = _open(browser, report[1] / "index.html")
    yield page
    page.close()


def test_the_page_makes_no_request_logs_no_error_and_lists_every_label(page, report):
    ev = report[0]
    assert [u for u in page.requests if not u.startswith("data:")] == [
        (report[1] / "index.html").as_uri()]
    assert page.errors == []
    headers = page.locator("#per-class th").all_inner_texts()
    assert [h.strip() for h in headers] == COLUMNS
    names = page.locator("#per-class tbody tr td:nth-child(2)").all_inner_texts()
    assert names == [ev.class_names[j] for j in ev.view_order()]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report-multi-label.png"), full_page=True)


@pytest.mark.parametrize("column", ["precision", "recall", "F1", "AP", "missed"])
def test_the_per_label_table_sorts_undefined_below_every_number(page, column):
    index = COLUMNS.index(column)
    values = f"els => els.map(r => parseFloat(r.cells[{index}].dataset.value))"
    shown = f"els => els.map(r => r.cells[{index}].textContent.trim())"
    header = page.locator("#per-class th").nth(index)
    header.click()
    down = page.locator("#per-class tbody tr").evaluate_all(values)
    assert down == sorted(down, reverse=True)
    header.click()
    rows = page.locator("#per-class tbody tr")
    assert rows.evaluate_all(values) == sorted(down)
    texts = rows.evaluate_all(shown)
    if column in ("recall", "AP"):  # the last label is on no photo
        assert texts[0] == "undefined" and "undefined" not in texts[1:]
    assert not any("nan" in t.lower() for t in texts)


def test_a_row_shows_its_missed_and_wrongly_given_photos(page, report):
    ev = report[0]
    row = max(ev.per_label(), key=lambda r: r["missed"])
    page.locator(f'#per-class tr[data-position="{row["position"]}"]').click()
    assert page.locator("#label-photos").is_visible()
    assert page.locator("#label-title").inner_text() == f"Label {row['name']}"
    headings = page.locator("#label-groups h4").all_inner_texts()
    assert headings[0].startswith(f"Missed: {row['missed']} photo")
    assert headings[1].startswith(f"Wrongly given: {row['wrongly_given']} photo")
    thumbs = page.locator("#label-groups .thumb")
    assert thumbs.count() == min(row["missed"], 8) + min(row["wrongly_given"], 8)
    assert thumbs.first.locator("img").evaluate("img => img.complete && img.naturalWidth > 0")
    assert "has: " in thumbs.first.inner_text() and "given: " in thumbs.first.inner_text()
    page.locator("#label-photos").screenshot(path=str(ARTIFACTS / "report-label-photos.png"))


def test_a_pair_row_shows_its_photos(page, report):
    pair = report[0].most_confused()[0]
    page.locator("tr.pair").first.click()
    assert page.locator("#label-title").inner_text() == (
        f"{pair.missed} missed, {pair.given} given instead")
    assert page.locator("#label-groups .thumb").count() == min(pair.count, 12)


def test_the_report_of_a_trained_run_opens_without_error(browser, trained_multi_label_run):
    import clearclass

    ev = clearclass.evaluate(trained_multi_label_run, device="cpu")
    page = _open(browser, ev.report_dir / "index.html")
    try:
        assert page.errors == []
        assert page.locator("#per-class tbody tr").count() == 3
        facts = page.locator("#facts").inner_text()
        assert "accuracy_multi" in facts and "Mean average precision" in facts
    finally:
        page.close()
