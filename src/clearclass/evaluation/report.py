"""RUN/report/: the figures and tables of an evaluation, and index.html that shows them.

index.html is one self-contained file: no script, style, font or image is fetched from
anywhere, so it opens offline, from a mail attachment or an archive, and makes no request.
Its confusion matrix is an SVG drawn here, in the view order (confused classes side by side),
with every class named; a small inline script shows actual, predicted, count and rate on
hover and the photos of a cell on click. Only thumbnails travel in the page (the photos of
mistakes, a few of each correct cell, the top losses), which keeps a 120-class report to a
few MB.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from clearclass import fileio
from clearclass.errors import RunError
from clearclass.evaluation.page import document, png_uri, script_json, thumbnail
from clearclass.evaluation.results import MOST_CONFUSED_PAIRS, TOP_LOSSES, Evaluation
from clearclass.parallel import default_workers, map_in_order
from clearclass.progress import bar

REPORT_FILES = ("index.html", "most_confused.csv", "per_class.csv", "confusion.png",
                "most_confused.png", "top_losses.png", "calibration.png")
MISTAKE_PHOTOS = 24  # thumbnails kept per wrong cell (worst first)
CORRECT_PHOTOS = 6  # thumbnails kept per diagonal cell (least sure first)
PAIRS_LISTED = 30  # rows of the most-confused table
LOSS_THUMBNAIL_SIDE = 160


def write_report(ev: Evaluation, folder: Path, top_losses: int = TOP_LOSSES) -> Path:
    """Write the figures, CSV files and index.html of an evaluation into `folder`.

    The report replaces the folder whole (never a mix of an old and a new report), so a
    folder holding other files is refused rather than emptied.
    """
    folder = Path(folder).expanduser()
    if folder.is_file():
        raise RunError(f"{folder} is a file; give a folder for the report.")
    others = fileio.foreign_entries(folder, REPORT_FILES)
    if others:
        raise RunError(f"{folder} holds files that are not part of a report "
                       f"({', '.join(others[:3])}); give a new or empty folder.")
    with fileio.changing(folder, start_empty=True) as new:
        _write_report_files(ev, new, top_losses, cleaning=folder.parent / "clean" / "index.html")
    return folder


def _write_report_files(ev: Evaluation, folder: Path, top_losses: int, cleaning: Path) -> None:
    from clearclass import figures

    pairs = ev.most_confused()
    fileio.write_csv(folder / "most_confused.csv", ("actual", "predicted", "count", "rate"),
                     [(p.actual, p.predicted, p.count, f"{p.rate:.4f}") for p in pairs])
    per_class = ev.per_class()
    columns = ("position", "class_id", "name", "precision", "recall", "f1", "support",
               "most_confused_with", "confused_count")
    fileio.write_csv(folder / "per_class.csv", columns,
                     [[f"{r[c]:.4f}" if isinstance(r[c], float) else r[c] for c in columns]
                      for r in per_class])
    pngs = {}
    for name, fig in (("confusion.png", ev.plot_confusion_matrix()),
                      ("most_confused.png", ev.plot_most_confused(MOST_CONFUSED_PAIRS)),
                      ("top_losses.png", ev.plot_top_losses(top_losses)),
                      ("calibration.png", ev.plot_calibration())):
        pngs[name] = figures.png_bytes(fig)
        fileio.atomic_write(folder / name, lambda tmp, data=pngs[name]: tmp.write_bytes(data))
    page = _page(ev, pngs, pairs, per_class, ev.top_losses(top_losses),
                 cleaning if cleaning.is_file() else None)
    fileio.write_text(folder / "index.html", page)


def _page(ev: Evaluation, pngs: dict[str, bytes], pairs: list, per_class: list[dict],
          worst: list[int], cleaning: Path | None) -> str:
    e = html.escape
    order = ev.view_order()
    position = {cls: i for i, cls in enumerate(order)}
    matrix = ev.confusion()
    cells, wanted = {}, set(worst)
    for a, p in zip(*np.nonzero(matrix)):
        photos = ev.cell_photos(int(a), int(p))[: CORRECT_PHOTOS if a == p else MISTAKE_PHOTOS]
        wanted.update(photos)
        cells[f"{position[a]},{position[p]}"] = [int(matrix[a, p]), photos]
    thumbs = _thumbnails(ev, sorted(wanted), worst)
    probability = ev.probabilities[np.arange(len(ev.targets)), ev.predictions]
    data = {
        "classes": [ev.class_names[i] for i in order],
        "support": [int(matrix[i].sum()) for i in order],
        "cells": cells,
        "photos": {str(i): [ev.paths[i].name, round(float(probability[i]), 3), thumbs[i][0]]
                   for i in sorted(wanted)},
    }
    facts = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in ev.facts())
    pair_rows = "".join(
        f'<tr class="pair" data-a="{position[ev.class_names.index(p.actual)]}" '
        f'data-p="{position[ev.class_names.index(p.predicted)]}"><td>{e(p.actual)}</td>'
        f'<td>{e(p.predicted)}</td><td class="number">{p.count}</td>'
        f'<td class="number">{p.rate:.0%}</td></tr>' for p in pairs[:PAIRS_LISTED]
    ) or '<tr><td colspan="4">No mistakes.</td></tr>'
    class_rows = "".join(
        f"<tr><td class=\"number\" data-value=\"{r['position']}\">{r['position'] + 1}</td>"
        f"<td data-value=\"{e(r['name'])}\">{e(r['name'])}</td>"
        + "".join(f"<td class=\"number\" data-value=\"{r[k]:.6f}\">{r[k]:.3f}</td>"
                  for k in ("precision", "recall", "f1"))
        + f"<td class=\"number\" data-value=\"{r['support']}\">{r['support']}</td>"
        f"<td data-value=\"{e(r['most_confused_with'])}\">{e(r['most_confused_with'])}"
        + (f" ({r['confused_count']})" if r["confused_count"] else "") + "</td></tr>"
        for r in per_class)
    losses = "".join(
        f'<figure class="loss"><img src="{thumbs[i][1]}" alt="{e(ev.paths[i].name)}">'
        f"<figcaption><b>{e(ev.class_names[ev.predictions[i]])}</b> / "
        f"{e(ev.class_names[ev.targets[i]])}<br>loss {ev.losses[i]:.2f} · "
        f"p {probability[i]:.2f}<br><span class=\"muted\">{e(ev.paths[i].name)}</span>"
        "</figcaption></figure>" for i in worst) or "<p>No photos.</p>"
    calibration = ev.calibration()
    architecture = ev.model.architecture if ev.model else "model"
    clean_link = ('<p>Data cleaning candidates: <a href="../clean/index.html">clean/index.html'
                  "</a></p>" if cleaning else
                  "<p class=\"muted\">Mislabelled photos, duplicates and unreadable files: run "
                  "<code>clearclass clean RUN</code>.</p>")
    body = f"""
<h1>Evaluation report</h1>
<table>{facts}</table>
{clean_link}
<h2 id="confusion">Confusion matrix</h2>
<p>Rows: actual class; columns: predicted class; colour: share of the actual class (blue:
recognised; red: sent to a wrong class, on its own scale). Classes confused with each other
sit side by side (hierarchical clustering of the confusion rates); per_class.csv lists them in
this order. Point at a cell for its figures; click it for its photos.</p>
<div id="matrix-box">{_matrix_svg(ev, order, matrix)}</div>
<div id="tooltip" role="tooltip" hidden></div>
<div id="cell-photos" hidden><h3 id="cell-title"></h3><div class="thumbs" id="cell-thumbs">
</div></div>
<p><a href="confusion.png">confusion.png</a>: the same matrix as a picture.</p>
<h2 id="most-confused">Most confused classes</h2>
<p>Rate: share of the actual class's photos predicted as the other. Click a row for its
photos. The heatmap shows only the classes of the {MOST_CONFUSED_PAIRS} most frequent
mistakes (grey: correct).</p>
<table id="pairs"><thead><tr><th>actual</th><th>predicted</th><th class="number">count</th>
<th class="number">rate</th></tr></thead><tbody>{pair_rows}</tbody></table>
<img src="{png_uri(pngs['most_confused.png'])}" alt="heatmap of the most confused classes">
<h2 id="per-class-title">Per class</h2>
<p>Click a heading to sort by it (again to reverse).</p>
<table id="per-class"><thead><tr><th class="number" data-type="number">#</th>
<th data-type="text">class</th><th class="number" data-type="number">precision</th>
<th class="number" data-type="number">recall</th><th class="number" data-type="number">F1</th>
<th class="number" data-type="number">support</th><th data-type="text">most confused with
</th></tr></thead><tbody>{class_rows}</tbody></table>
<h2 id="top-losses">Top losses</h2>
<p>The photos the model got most wrong: <b>predicted</b> / actual, the loss, and the
probability of the prediction.</p>
<div class="losses">{losses}</div>
<h2 id="calibration">Calibration</h2>
<p>Expected calibration error: <b>{calibration.expected_error:.3f}</b>. Bars above the
diagonal: the model is right more often than it says; below: it is overconfident.</p>
<img src="{png_uri(pngs['calibration.png'])}" alt="reliability diagram">
"""
    return document(f"clearclass report: {architecture}", body,
                    f"const DATA = {script_json(data)};\n{_SCRIPT}", style=_STYLE)


def _thumbnails(ev: Evaluation, indices: list[int], worst: list[int]) -> dict[int, tuple]:
    """(small, large) data URIs per photo; the large one only for the top losses."""
    big = set(worst)

    def make(i: int) -> tuple[str, str]:
        small = thumbnail(ev.paths[i])
        return small, thumbnail(ev.paths[i], LOSS_THUMBNAIL_SIDE) if i in big else ""

    result = {}
    with bar("making thumbnails", len(indices)) as progress:
        for i, uris in map_in_order(make, indices, default_workers()):
            result[i] = uris
            progress.advance(1)
    return result


def _matrix_svg(ev: Evaluation, order: list[int], matrix: np.ndarray) -> str:
    """The whole confusion matrix as SVG: a rect per non-empty cell, every class named."""
    n = len(order)
    # 14 px rows hold 11 px text with its line spacing: names legible, none overlapping.
    cell = max(14, min(32, 700 // max(n, 1)))
    font = min(13, cell - 3)
    names = [ev.class_names[i] for i in order]
    label = min(280, 16 + int(0.62 * font * max((len(s) for s in names), default=1)))
    side = n * cell
    width, height = label + side + 2, label + side + 2
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    off = rates.copy()
    np.fill_diagonal(off, 0)
    worst = float(off.max()) or 1.0
    e = html.escape
    parts = [f'<svg id="matrix" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" font-size="{font}" data-cell="{cell}" data-left="{label}" '
             f'data-top="{label}" role="img" aria-label="confusion matrix">',
             f'<rect x="{label}" y="{label}" width="{side}" height="{side}" fill="#fbfbfb" '
             'stroke="#ccc"/>', f'<g id="cells" transform="translate({label},{label})">']
    for r, a in enumerate(order):
        for c, p in enumerate(order):
            if matrix[a, p]:
                colour = (_blend((255, 255, 255), (8, 81, 156), rates[a, p]) if a == p else
                          _blend((255, 235, 230), (165, 15, 21), off[a, p] / worst))
                parts.append(f'<rect x="{c * cell}" y="{r * cell}" width="{cell}" '
                             f'height="{cell}" fill="{colour}"/>')
                if cell >= 24:  # room for the count (up to about 29 classes)
                    dark = rates[a, p] > 0.5 if a == p else off[a, p] / worst > 0.5
                    parts.append(f'<text class="count" x="{c * cell + cell / 2:g}" '
                                 f'y="{r * cell + cell / 2:g}" text-anchor="middle" '
                                 f'dominant-baseline="central" fill="{"#fff" if dark else "#222"}"'
                                 f">{matrix[a, p]}</text>")
    parts.append("</g>")
    for r, name in enumerate(names):
        y = label + r * cell + cell / 2
        x = label + r * cell + cell / 2
        parts.append(f'<text class="row" x="{label - 4}" y="{y:.1f}" text-anchor="end" '
                     f'dominant-baseline="central">{e(_short(name))}<title>{e(name)}</title>'
                     "</text>")
        parts.append(f'<text class="col" transform="translate({x:.1f},{label - 4}) '
                     f'rotate(-90)" dominant-baseline="central">{e(_short(name))}'
                     f"<title>{e(name)}</title></text>")
    parts.append("</svg>")
    return "".join(parts)


def _blend(low: tuple, high: tuple, t: float) -> str:
    t = float(min(max(t, 0.0), 1.0)) ** 0.7  # lift small rates: one mistake stays visible
    return "#" + "".join(f"{round(lo + (hi - lo) * t):02x}" for lo, hi in zip(low, high))


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


_STYLE = """
#matrix-box { overflow: auto; max-height: 95vh; border: 1px solid #eee; }
#matrix text.row, #matrix text.col { fill: #222; cursor: default; }
#matrix text.hl { fill: #c00; font-weight: bold; }
#cells { cursor: pointer; }
#cells text.count { pointer-events: none; font-size: 11px; }
#tooltip { position: fixed; pointer-events: none; background: #fff; border: 1px solid #888;
           padding: 4px 8px; font-size: 13px; box-shadow: 0 2px 6px rgba(0,0,0,.2); }
#cell-photos { margin: 1em 0; padding: 0.5em 1em; background: #f7f7f7; }
tr.pair { cursor: pointer; }
tr.pair:hover { background: #fff3d6; }
#per-class th { cursor: pointer; user-select: none; }
.losses { display: flex; flex-wrap: wrap; gap: 10px; }
figure.loss { margin: 0; width: 170px; font-size: 12px; }
figure.loss img { width: 160px; height: 160px; object-fit: contain; background: #f3f3f3; }
"""

# Plain DOM code, no library: the page must work offline and stay small.
_SCRIPT = r"""
(function () {
  const svg = document.getElementById("matrix");
  const tip = document.getElementById("tooltip");
  const cell = +svg.dataset.cell, left = +svg.dataset.left, top = +svg.dataset.top;
  const n = DATA.classes.length;
  const rows = svg.querySelectorAll("text.row"), cols = svg.querySelectorAll("text.col");
  let lit = [];
  function at(event) {
    const box = svg.getBoundingClientRect();
    const p = Math.floor((event.clientX - box.left - left) / cell);
    const a = Math.floor((event.clientY - box.top - top) / cell);
    return (a >= 0 && a < n && p >= 0 && p < n) ? [a, p] : null;
  }
  function light(a, p) {
    lit.forEach(el => el.classList.remove("hl"));
    lit = a === null ? [] : [rows[a], cols[p]];
    lit.forEach(el => el.classList.add("hl"));
  }
  function percent(x) { return (100 * x).toFixed(x < 0.1 ? 1 : 0) + "%"; }
  svg.addEventListener("mousemove", function (event) {
    const hit = at(event);
    if (!hit) { tip.hidden = true; light(null); return; }
    const [a, p] = hit, entry = DATA.cells[a + "," + p], count = entry ? entry[0] : 0;
    const share = DATA.support[a] ? count / DATA.support[a] : 0;
    tip.textContent = "";
    [["Actual", DATA.classes[a]], ["Predicted", DATA.classes[p]],
     ["Count", count + " of " + DATA.support[a]], ["Rate", percent(share) + " of the actual class"]]
      .forEach(function (pair) {
        const line = document.createElement("div");
        const b = document.createElement("b"); b.textContent = pair[0] + ": ";
        line.appendChild(b); line.appendChild(document.createTextNode(pair[1]));
        tip.appendChild(line);
      });
    tip.style.left = (event.clientX + 14) + "px"; tip.style.top = (event.clientY + 14) + "px";
    tip.hidden = false; light(a, p);
  });
  svg.addEventListener("mouseleave", function () { tip.hidden = true; light(null); });
  function showCell(a, p) {
    const entry = DATA.cells[a + "," + p], box = document.getElementById("cell-photos");
    const thumbs = document.getElementById("cell-thumbs");
    const count = entry ? entry[0] : 0, shown = entry ? entry[1] : [];
    document.getElementById("cell-title").textContent =
      "Actual " + DATA.classes[a] + ", predicted " + DATA.classes[p] + ": " + count +
      " photo" + (count === 1 ? "" : "s") +
      (shown.length < count ? " (showing " + shown.length + ", " +
       (a === p ? "the least sure first)" : "the worst first)") : "");
    thumbs.textContent = "";
    shown.forEach(function (i) {
      const photo = DATA.photos[i], fig = document.createElement("div");
      fig.className = "thumb";
      const img = document.createElement("img");
      img.alt = photo[0] + (photo[2] ? "" : " (could not be read when the report was made)");
      if (photo[2]) img.src = photo[2];
      fig.appendChild(img);
      fig.appendChild(document.createTextNode(photo[0] + " · p " + photo[1].toFixed(2)));
      thumbs.appendChild(fig);
    });
    box.hidden = false;
    box.scrollIntoView({block: "nearest"});
  }
  svg.addEventListener("click", function (event) {
    const hit = at(event);
    if (hit) showCell(hit[0], hit[1]);
  });
  document.querySelectorAll("tr.pair").forEach(function (row) {
    row.addEventListener("click", function () { showCell(+row.dataset.a, +row.dataset.p); });
  });
  const table = document.getElementById("per-class");
  table.querySelectorAll("th").forEach(function (th, column) {
    th.addEventListener("click", function () {
      const down = th.dataset.order !== "down";
      table.querySelectorAll("th").forEach(h => delete h.dataset.order);
      th.dataset.order = down ? "down" : "up";
      const body = table.tBodies[0], number = th.dataset.type === "number";
      const sorted = Array.from(body.rows).sort(function (x, y) {
        const u = x.cells[column].dataset.value, v = y.cells[column].dataset.value;
        const d = number ? (+u) - (+v) : u.localeCompare(v);
        return down ? -d : d;
      });
      sorted.forEach(r => body.appendChild(r));
    });
  });
})();
"""
