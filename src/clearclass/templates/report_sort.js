{# The per-class (or per-label) table sorted by a click on a heading, again to reverse:
   a piece of the report's script (report.js, report_multi_label.js), inside its function. #}
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
