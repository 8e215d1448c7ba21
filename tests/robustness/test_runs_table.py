"""`clearclass runs` on folders as they are found: damaged files, hostile names, runs being
trained, stopped or swapped, and many runs. The table never fails because of one run: the
run is listed with what can be read, and one note says which could not be read whole.
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from pathlib import Path

import pytest

import clearclass
from clearclass import fileio
from clearclass.errors import RunError
from clearclass.run_folder import RunFolder
from tests.conftest import failed, make_dataset, run_cli, tiny


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """One tiny run of 4 epochs (1 frozen, 3 unfrozen), copied by each test: seconds, where
    the session's `trained_run` takes most of a minute."""
    from clearclass import progress

    root = tmp_path_factory.mktemp("runs-table-robustness")
    with progress.quiet():
        run = clearclass.train(make_dataset(root / "colours", per_class=6),
                               out=root / "run", **tiny(epochs=3))
    return run.run_dir


def _copy(run: Path, target: Path, weights: bool = True) -> Path:
    """A copy of a trained run (without its weights: a run folder 200 times over)."""
    ignore = None if weights else shutil.ignore_patterns("*.safetensors", "split.csv")
    return Path(shutil.copytree(run, target, ignore=ignore))


def _rows(folder: Path) -> dict:
    return {r.run: r for r in clearclass.runs(folder).rows}


def test_damaged_files_cost_only_their_columns(trained_run, tmp_path):
    runs = tmp_path / "runs"
    good = _copy(trained_run, runs / "good")
    (_copy(trained_run, runs / "bad-json") / "config.json").write_text("{not json")
    (_copy(trained_run, runs / "latin1") / "config.json").write_bytes(b'{"config": "\xff\xfe"}')
    formula = _copy(trained_run, runs / "formula")
    (formula / "metrics.csv").write_text(
        "epoch,train_loss,valid_loss,accuracy,time,stage\n"
        "=cmd|' /C calc'!A0,@SUM(1),+1,-1,\x00,frozen\n", encoding="utf-8")
    (_copy(trained_run, runs / "no-metrics") / "metrics.csv").unlink()
    (_copy(trained_run, runs / "list-summary") / "summary.json").write_text("[1, 2]")
    (_copy(trained_run, runs / "bad-model") / "model" / "model.json").write_bytes(b"\x89\xff")

    found = clearclass.runs(runs)
    rows = {r.run: r for r in found.rows}
    assert set(rows) == {"good", "bad-json", "latin1", "formula", "no-metrics",
                         "list-summary", "bad-model"}
    assert not rows["good"].problem
    assert "config.json is damaged" in rows["bad-json"].problem
    assert rows["bad-json"].accuracy is not None  # metrics.csv still read
    assert rows["bad-json"].model == "test_resnet"  # from model.json instead
    assert "config.json" in rows["latin1"].problem
    assert "metrics.csv is damaged" in rows["formula"].problem
    assert rows["formula"].model == "test_resnet" and rows["formula"].accuracy is None
    assert rows["no-metrics"].epochs_done == 0 and rows["no-metrics"].date is not None
    assert "summary.json is damaged" in rows["list-summary"].problem
    assert rows["list-summary"].epochs == "4 of 4"  # every epoch done, no checkpoint left
    assert "model.json" in rows["bad-model"].problem and rows["bad-model"].classes is None
    assert all(str(good.parent) not in r.problem for r in rows.values())  # said short
    (note,) = found.notes
    assert note.startswith("5 of 7 runs could not be read whole") and "bad-json" in note
    assert "unreadable: config.json is damaged" in rows["bad-json"].cells()[-1]

    # The command lists them all, says which could not be read on stderr, and succeeds;
    # the CSV keeps a formula-looking cell from running in a spreadsheet.
    table = tmp_path / "runs.csv"
    result = run_cli("runs", runs, "--csv", table, "--plot", tmp_path / "runs.png")
    assert result.returncode == 0, result.stderr
    assert "5 of 7 runs could not be read whole" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stdout.splitlines()) >= 8
    with open(table, newline="", encoding="utf-8") as f:
        assert not any(cell.startswith(("=", "@", "+")) for row in csv.reader(f)
                       for cell in row)


def test_hostile_run_names_stay_text(trained_run, tmp_path):
    runs = tmp_path / "runs"
    _copy(trained_run, runs / "=HYPERLINK(x)", weights=False)
    _copy(trained_run, runs / "[bold]rich[/bold]", weights=False)
    latin1 = Path(os.fsdecode(os.fsencode(str(runs)) + b"/caf\xe9"))
    _copy(trained_run, latin1, weights=False)
    found = clearclass.runs(runs)
    assert len(found.rows) == 3 and not found.notes
    assert "caf\\xe9" in repr(found) and "caf\\xe9" in found._repr_html_()
    table = found.to_csv(tmp_path / "runs.csv")
    text = table.read_text(encoding="utf-8")
    assert "'=HYPERLINK(x)" in text and "caf\\xe9" in text
    result = run_cli("runs", runs)
    assert result.returncode == 0 and "[bold]rich[/bold]" in result.stdout
    assert "caf\\xe9" in result.stdout


def test_an_empty_or_missing_folder_says_what_to_give(tmp_path):
    (tmp_path / "empty" / "photos").mkdir(parents=True)
    with pytest.raises(RunError, match="holds no run folder; train one with clearclass train"):
        clearclass.runs(tmp_path / "empty")
    failed(run_cli("runs", tmp_path / "empty"), "holds no run folder")
    failed(run_cli("runs", tmp_path / "nowhere"), "does not exist")
    (tmp_path / "file").write_text("x")
    failed(run_cli("runs", tmp_path / "file"), "is a file")


def test_runs_being_trained_stopped_or_swapped(trained_run, tmp_path):
    runs = tmp_path / "runs"
    # A run whose first epoch is still being staged: only hidden folders, not a run yet.
    _copy(trained_run, runs / ".starting.building", weights=False)
    (runs / ".starting.lock").write_text("")
    # A finished run while a next state is being written beside it.
    _copy(trained_run, runs / "finished", weights=False)
    _copy(trained_run, runs / ".finished.building", weights=False)
    # A run stopped after 2 of its 4 epochs: a checkpoint, no summary.json.
    stopped = RunFolder(_copy(trained_run, runs / "stopped", weights=False))
    stopped.write_history(stopped.history()[:2])
    stopped.summary_file.unlink()
    stopped.checkpoint_dir.mkdir()
    # A run being trained: the same, and another process holds its lock.
    training = RunFolder(_copy(stopped.path, runs / "training"))
    # A swap a killed process cut short: only .NAME.next is there.
    _copy(trained_run, runs / ".swapped.next", weights=False)

    with fileio.exclusive(training.path):
        rows = _rows(runs)
    assert set(rows) == {"finished", "stopped", "training", "swapped"}
    assert rows["finished"].epochs == "4 of 4"
    assert rows["stopped"].epochs == "2 of 4 (stopped)" and rows["stopped"].state == "stopped"
    assert rows["training"].epochs == "2 of 4 (training)"
    assert rows["swapped"].epochs == "4 of 4" and not rows["swapped"].problem
    assert rows["stopped"].accuracy == pytest.approx(stopped.history()[-1].accuracy)
    assert _rows(runs)["training"].state == "stopped"  # its lock let go
    assert (runs / ".swapped.next").is_dir() and not (runs / "swapped").exists()  # untouched


def test_two_hundred_runs_in_reasonable_time(trained_run, tmp_path):
    runs = tmp_path / "runs"
    first = _copy(trained_run, runs / "run-000", weights=False)
    for n in range(1, 200):
        shutil.copytree(first, runs / f"run-{n:03d}")
    for n in range(200):  # one a minute: run-199 newest
        metrics = runs / f"run-{n:03d}" / "metrics.csv"
        os.utime(metrics, (1_700_000_000 + 60 * n,) * 2)
    started = time.perf_counter()
    found = clearclass.runs(runs)
    seconds = time.perf_counter() - started
    assert len(found.rows) == 200 and seconds < 20, seconds
    assert [r.run for r in found.rows[:3]] == ["run-199", "run-198", "run-197"]
    figure = found.plot()
    named = [line for line in figure.axes[0].get_lines()
             if not line.get_label().startswith("_")]
    assert len(named) == 12 and "12 newest of 200 runs" in figure._suptitle.get_text()
    assert len(found.plot(limit=3).axes[0].get_legend().get_texts()) == 3
    assert len(repr(found).splitlines()) == 201
