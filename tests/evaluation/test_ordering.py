"""The confusion view at 120 classes: confused classes side by side, every name legible."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from clearclass.evaluation import confusion_order, write_report
from tests.evaluation.synthetic import GROUP, confused_groups


def test_classes_confused_with_each_other_end_up_side_by_side():
    ev, group = confused_groups()
    order = ev.view_order()
    assert sorted(order) == list(range(120))
    place = np.empty(120, dtype=int)
    place[order] = np.arange(120)
    matrix = ev.confusion()
    np.fill_diagonal(matrix, 0)
    whole = 0
    for g in np.unique(group):
        members = np.nonzero(group == g)[0]
        within = matrix[np.ix_(members, members)]
        # A class that happened to be confused with none of its group may sit anywhere.
        linked = members[(within.sum(0) + within.sum(1)) > 0]
        assert np.ptp(place[linked]) == len(linked) - 1, (members, place[members])
        whole += len(linked) == GROUP
    assert whole >= 25  # the test data really has groups of 4 to keep together
    # Alphabetical order scatters them: the test would pass for the wrong reason otherwise.
    assert max(np.ptp(np.nonzero(group == g)[0]) for g in np.unique(group)) > 20


def test_order_of_a_matrix_without_mistakes_is_alphabetical():
    assert confusion_order(np.diag([5, 3, 4, 2])).tolist() == [0, 1, 2, 3]
    assert confusion_order(np.array([[1, 1], [0, 2]])).tolist() == [0, 1]


@pytest.mark.slow  # draws figures of 120 classes
def test_per_class_rows_and_csv_follow_the_view_order(tmp_path):
    ev, _ = confused_groups(photos=tmp_path / "photos")
    rows = ev.per_class()
    assert [r["class_id"] for r in rows] == [ev.class_ids[i] for i in ev.view_order()]
    report = write_report(ev, tmp_path / "report", top_losses=4)
    with open(report / "per_class.csv", newline="") as f:
        written = list(csv.DictReader(f))
    assert [r["class_id"] for r in written] == [r["class_id"] for r in rows]
    assert written[0]["position"] == "0" and "most_confused_with" in written[0]
    with open(report / "most_confused.csv", newline="") as f:
        first = next(csv.DictReader(f))
    pair = ev.most_confused()[0]
    assert first["actual"] == pair.actual and float(first["rate"]) == pytest.approx(
        pair.count / 20, abs=1e-4)
    size = (report / "index.html").stat().st_size
    assert size < 5_000_000, f"{size / 1e6:.1f} MB"


@pytest.mark.slow  # draws figures of 120 classes
def test_every_class_name_of_the_120_class_figure_is_legible(tmp_path):
    """All 120 names drawn, at 10 px or more, none overlapping its neighbour."""
    ev, _ = confused_groups()
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = ev.plot_confusion_matrix()
    canvas = FigureCanvasAgg(fig)  # as figures.save draws it
    canvas.draw()
    renderer = canvas.get_renderer()
    ax = fig.axes[0]
    for labels in (ax.get_yticklabels(), ax.get_xticklabels()):
        texts = [t.get_text() for t in labels]
        assert texts == [ev.class_names[i] if len(ev.class_names[i]) <= 24
                         else ev.class_names[i][:23] + "…" for i in ev.view_order()]
        assert min(t.get_fontsize() for t in labels) * fig.dpi / 72 >= 10
        boxes = sorted((t.get_window_extent(renderer) for t in labels),
                       key=lambda b: (b.y0, b.x0))
        for a, b in zip(boxes, boxes[1:]):
            assert not a.overlaps(b), (a, b)


def test_calibration_bins_and_expected_error():
    ev, _ = confused_groups(n=8, per_class=50)
    calibration = ev.calibration(bins=10)
    assert sum(b.count for b in calibration.bins) == len(ev.targets)
    full = [b for b in calibration.bins if b.count]
    assert len(full) == 1 and full[0].confidence == pytest.approx(0.8)
    assert calibration.expected_error == pytest.approx(abs(ev.accuracy - 0.8))
    ev.probabilities = np.eye(8)[ev.targets] * 0.9 + 0.1 / 8  # always right, 90% sure
    assert ev.calibration().expected_error == pytest.approx(1 - (0.9 + 0.1 / 8))
