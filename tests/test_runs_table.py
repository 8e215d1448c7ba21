"""`clearclass runs` and `clearclass.runs`: the table of the runs under a folder.

Three tiny trainings with different settings, trained once for the module; each test reads
them (or a copy), and the values of the table are checked against the files themselves.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

import clearclass
from clearclass import progress
from clearclass.runs_table import RunRow, Runs
from tests.conftest import failed, make_dataset, run_cli, tiny

# name: settings changed from tiny(); trained in this order, so newest first is reversed.
SETTINGS = {"first": {}, "second": {"learning_rate": 5e-3, "batch_size": 4},
            "nested/third": {"epochs": 2, "balance": "weights"}}


@pytest.fixture(scope="module")
def runs_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs-table")
    data = make_dataset(root / "colours", per_class=6)
    with progress.quiet():
        for name, changes in SETTINGS.items():
            clearclass.train(data, out=root / "runs" / name, **tiny(**changes))
        clearclass.evaluate(root / "runs" / "second", tta=True)
    return root / "runs"


def _metrics(run: Path) -> list[dict]:
    """metrics.csv as a spreadsheet reads it (an independent reading, for the checks)."""
    with open(run / "metrics.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_one_row_per_run_newest_first_with_the_values_of_its_files(runs_folder):
    found = clearclass.runs(runs_folder)
    assert isinstance(found, Runs) and all(isinstance(r, RunRow) for r in found.rows)
    assert [r.run for r in found.rows] == ["nested/third", "second", "first"]
    for row in found.rows:
        run = runs_folder / row.run
        config = json.loads((run / "config.json").read_text())
        settings, epochs = config["config"], _metrics(run)
        model = json.loads((run / "model" / "model.json").read_text())
        assert row.model == settings["model"] == "test_resnet"
        assert row.size == settings["item_resize"] == 32
        assert row.data == "colours"
        assert row.epochs_done == len(epochs) == settings["freeze_epochs"] + settings["epochs"]
        assert row.epochs == f"{len(epochs)} of {len(epochs)}" and row.state == "finished"
        assert row.accuracy == pytest.approx(float(epochs[-1]["accuracy"]))
        assert (row.train_photos, row.valid_photos) == (
            model["training"]["train_photos"], model["training"]["valid_photos"])
        assert row.classes == 3
        summary = json.loads((run / "summary.json").read_text())
        assert row.seconds == pytest.approx(summary["timings"]["total_seconds"])
        assert row.device == config["device"]
        assert row.date is not None and not row.problem
    assert [r.date for r in found.rows] == sorted((r.date for r in found.rows), reverse=True)
    assert found.notes == []


def test_the_settings_that_differ_are_named_and_the_others_are_not(runs_folder):
    found = clearclass.runs(runs_folder)
    assert found.varying == ["learning_rate", "batch_size", "balance"]
    by_name = {r.run: r for r in found.rows}
    assert by_name["second"].differs == "learning_rate=0.005, batch_size=4, balance=none"
    assert "balance=weights" in by_name["nested/third"].differs
    # epochs differ too, but have their own column; out and data always differ or never do
    assert "epochs" not in found.varying and "out" not in found.varying


def test_tta_accuracy_comes_from_the_evaluation(runs_folder, tmp_path):
    found = {r.run: r for r in clearclass.runs(runs_folder).rows}
    results = json.loads((runs_folder / "second" / "report" / "results.json").read_text())
    assert found["second"].tta_accuracy == pytest.approx(results["tta_accuracy"])
    assert found["first"].tta_accuracy is None  # never evaluated
    # evaluate without --tta: the column is blank, not the previous value
    run = shutil.copytree(runs_folder / "second", tmp_path / "runs" / "copy")
    assert run_cli("evaluate", run, "--quiet").returncode == 0
    (row,) = clearclass.runs(tmp_path / "runs").rows
    assert row.tta_accuracy is None and row.cells()[8] == ""


def test_a_folder_that_is_a_run_lists_itself(runs_folder):
    (row,) = clearclass.runs(runs_folder / "first").rows
    assert row.run == "first" and row.epochs == "2 of 2"


def test_plot_has_one_line_per_run_named_in_the_legend(runs_folder):
    figure = clearclass.runs(runs_folder).plot()
    accuracy, loss = figure.axes[:2]
    named = [line.get_label() for line in accuracy.get_lines()
             if not line.get_label().startswith("_")]
    assert named == ["nested/third", "second", "first"]
    assert [t.get_text() for t in accuracy.get_legend().get_texts()] == named
    assert accuracy.get_ylabel() == "validation accuracy"
    assert loss.get_ylabel() == "validation loss"
    # frozen epochs hollow, unfrozen filled: both kinds of marker are drawn
    faces = {str(line.get_markerfacecolor()) for line in accuracy.get_lines()
             if line.get_marker() == "o"}
    assert "white" in faces and len(faces) > 1


def test_html_escapes_a_hostile_run_name(runs_folder, tmp_path):
    shutil.copytree(runs_folder / "first", tmp_path / "runs" / "<script>x</script>")
    page = clearclass.runs(tmp_path / "runs")._repr_html_()
    assert "&lt;script&gt;x&lt;/script&gt;" in page
    assert "<script>" not in page


def test_the_command_prints_the_table_and_writes_the_figure_and_csv(runs_folder, tmp_path):
    png, svg, table = tmp_path / "runs.png", tmp_path / "runs.svg", tmp_path / "runs.csv"
    result = run_cli("runs", runs_folder, "--plot", png, "--csv", table)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["run", "data", "model", "size"]
    assert [line.split()[0] for line in lines[1:4]] == ["nested/third", "second", "first"]
    assert f"Wrote {png}" in result.stdout and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(table, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["nested/third", "second", "first"]
    assert float(rows[1]["tta_accuracy"]) == pytest.approx(
        clearclass.runs(runs_folder).rows[1].tta_accuracy)
    assert run_cli("runs", runs_folder, "--plot", svg).returncode == 0
    assert b"<svg" in svg.read_bytes()[:400]


def test_the_command_refuses_what_it_cannot_use(tmp_path, runs_folder):
    failed(run_cli("runs", tmp_path / "missing"), "does not exist")
    (tmp_path / "empty").mkdir()
    failed(run_cli("runs", tmp_path / "empty"), "holds no run folder", "clearclass train")
    failed(run_cli("runs", runs_folder, "--plot", tmp_path / "runs.gif"), "--plot",
           ".png, .svg or .pdf")
    assert not (tmp_path / "runs.gif").exists()
    failed(run_cli("runs", runs_folder, "--plot", tmp_path), "--plot", "names a folder")
