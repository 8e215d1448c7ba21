{# The multi-label report's interactions (report_multi_label.html). Plain DOM code, no
   library: the page must work offline and stay small. DATA (set before it, from
   report._multi_label_page) holds the labels, the photos of each row and of each pair, and
   thumbnails. #}
(function () {
  const box = document.getElementById("label-photos");
  const groups = document.getElementById("label-groups");
  function showPhotos(title, parts) {
    document.getElementById("label-title").textContent = title;
    groups.textContent = "";
    parts.forEach(function (part) {
      const [heading, count, shown] = part;
      const h = document.createElement("h4");
      h.textContent = heading + ": " + count + " photo" + (count === 1 ? "" : "s") +
        (shown.length < count ? " (showing " + shown.length + ", the worst first)" : "");
      groups.appendChild(h);
      const thumbs = document.createElement("div");
      thumbs.className = "thumbs";
      shown.forEach(function (i) {
        const photo = DATA.photos[i], fig = document.createElement("div");
        fig.className = "thumb";
        const img = document.createElement("img");
        img.alt = photo[0] + (photo[1] ? "" : " (could not be read when the report was made)");
        if (photo[1]) img.src = photo[1];
        fig.appendChild(img);
        [photo[0], "has: " + photo[2], "given: " + photo[3]].forEach(function (text) {
          const line = document.createElement("div");
          line.textContent = text;
          fig.appendChild(line);
        });
        thumbs.appendChild(fig);
      });
      groups.appendChild(thumbs);
    });
    box.hidden = false;
    box.scrollIntoView({block: "nearest"});
  }
  document.querySelectorAll("#per-class tbody tr.label").forEach(function (row) {
    row.addEventListener("click", function () {
      const position = +row.dataset.position, entry = DATA.rows[position];
      showPhotos("Label " + DATA.labels[position],
                 [["Missed", entry[0], entry[1]], ["Wrongly given", entry[2], entry[3]]]);
    });
  });
  document.querySelectorAll("tr.pair").forEach(function (row) {
    row.addEventListener("click", function () {
      const pair = DATA.pairs[+row.dataset.pair];
      showPhotos(pair[0] + " missed, " + pair[1] + " given instead",
                 [["Photos", pair[2], pair[3]]]);
    });
  });
  {% include "report_sort.js" %}
})();
