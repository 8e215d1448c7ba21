{# The report's interactions. Plain DOM code, no library: the page must work offline and stay
   small. DATA (set before it, from report._page) holds classes, cells and thumbnails. #}
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
  {% include "report_sort.js" %}
})();
