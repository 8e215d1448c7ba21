"""The evaluation report of a 120-class model: how long it takes to write, how big it is, how
fast Chromium opens it.

A 120-class evaluation is made from real photos (the 3,929 validation photos of
imagewoof-160, assigned round-robin to 120 classes, 33 per class) and synthetic
predictions shaped like a fine-grained dataset's: classes come in look-alike groups of 4
(terriers with terriers), and each photo's logits favour its class and, less, its group,
for about 87% accuracy. `write_report` then writes RUN/report/ as `clearclass evaluate`
does, and Debian's chromium (headless, through Playwright) opens index.html 5 times, each in
a fresh page: the time to the load event (the page drawn, its script run) is reported as
the median, with every request the page made (there should be one: the file itself).

    .venv/bin/python benchmarks/report_page.py     # about 1 minute on 2 cores

Writes benchmarks/results/report_page.json and the "Report page" section of RESULTS.md.
fastai has no HTML report to set beside it: its peer, `ClassificationInterpretation.
plot_confusion_matrix()` at 120 classes, is a single matplotlib figure without order or
interaction.
"""

from __future__ import annotations

import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache_modes import machine, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "imagewoof-160"
CLASSES, PER_CLASS, GROUP, LOADS = 120, 33, 4, 5
SECTION = "## Report page (120 classes)"


def evaluation(photos: list[Path], seed: int = 0):
    from clearclass.evaluation import Evaluation

    rng = np.random.default_rng(seed)
    group = rng.permutation(CLASSES) // GROUP
    targets = np.repeat(np.arange(CLASSES), PER_CLASS)
    logits = rng.normal(0, 1, (len(targets), CLASSES))
    logits[np.arange(len(targets)), targets] += 2.4
    for g in range(CLASSES // GROUP):
        members = np.nonzero(group == g)[0]
        logits[np.ix_(np.isin(targets, members), members)] += 1.8
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    names = [f"breed {i:03d}" for i in range(CLASSES)]
    paths = [photos[i % len(photos)] for i in range(len(targets))]
    return Evaluation([f"n{i:08d}" for i in range(CLASSES)], names, paths, targets,
                      probabilities, source="validation photos (synthetic predictions)")


def open_times(page_file: Path) -> tuple[list[float], list[str]]:
    from playwright.sync_api import sync_playwright

    times, requests = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                             headless=True)
        for _ in range(LOADS):
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_file.as_uri(), wait_until="load")
            times.append(page.evaluate(
                "performance.getEntriesByType('navigation')[0].loadEventEnd") / 1000)
            page.close()
        browser.close()
    return times, requests


def main() -> None:
    from clearclass import progress
    from clearclass.evaluation import write_report

    photos = sorted((DATA / "val").rglob("*.JPEG"))
    if not photos:
        sys.exit(f"No photos in {DATA / 'val'} (imagewoof-160).")
    ev = evaluation(photos)
    with tempfile.TemporaryDirectory() as tmp, progress.quiet():
        start = time.perf_counter()
        folder = write_report(ev, Path(tmp) / "report")
        written = time.perf_counter() - start
        page = folder / "index.html"
        size = page.stat().st_size
        thumbnails = page.read_text().count("data:image/jpeg;base64,")
        loads, requests = open_times(page)
    results = {
        "date": datetime.date.today().isoformat(), "machine": machine(),
        "classes": CLASSES, "photos": len(ev.targets), "accuracy": ev.accuracy,
        "write_seconds": written, "html_bytes": size, "thumbnails": thumbnails,
        "load_seconds": loads, "requests": sorted(set(requests)),
    }
    out = ROOT / "benchmarks" / "results" / "report_page.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    outside = [u for u in results["requests"] if not u.startswith("file:")]
    m = results["machine"]
    section = "\n".join([
        SECTION, "",
        f"`python benchmarks/report_page.py`, run on {results['date']}. Machine: {m['cpu']}, "
        f"{m['cores']} cores; Chromium headless (Debian's), Playwright.", "",
        f"{CLASSES} classes, {len(ev.targets):,} photos of imagewoof-160/val with synthetic "
        f"predictions in look-alike groups of {GROUP} (accuracy {ev.accuracy:.1%}).", "",
        "| write RUN/report/ | index.html | thumbnails in it | open in Chromium (median of "
        f"{LOADS}) | slowest open | requests other than the file |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| {written:.1f} s | {size / 1e6:.2f} MB | {thumbnails} | "
        f"{statistics.median(loads):.2f} s | {max(loads):.2f} s | {len(outside)} |", "",
    ])
    write_section(ROOT / "benchmarks" / "RESULTS.md", section)
    print(section)


if __name__ == "__main__":
    main()
