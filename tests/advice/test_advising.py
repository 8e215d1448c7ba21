"""advise: a row per class, three next steps in plain words, RUN/advice/ written."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from clearclass.advice import advising
from clearclass.advice.advising import COLUMNS, Advice, ClassAdvice, advise
from clearclass.advice.learning_curve import PhotosNeeded
from tests.conftest import failed, run_cli


@pytest.fixture
def run(trained_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


def test_a_row_per_class_the_files_and_the_notebook_display(run):
    advice = advise(run, device="cpu")
    assert [r.class_id for r in advice.classes] == advice.photos.curves.class_ids
    assert sum(r.valid_photos for r in advice.classes) > 0
    assert all(r.accuracy is None or 0 <= r.accuracy <= 1 for r in advice.classes)
    # The run's accuracy + 5 points, at most 99% (or the accuracy, when it is above that).
    assert advice.target == max(advice.accuracy, min(advice.accuracy + 0.05, 0.99))
    assert len(advice.next_steps) <= 3
    with open(run / "advice" / "classes.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == COLUMNS and len(rows) == len(advice.classes) + 1
    page = (run / "advice" / "index.html").read_text()
    assert "Classes, lowest accuracy first" in page and "data:image/png;base64," in page
    assert "Classes, lowest accuracy first" in advice._repr_html_()
    assert str(run) in advice.summary()


def test_the_command_prints_the_table_and_the_steps(run):
    result = run_cli("advise", run, "--target", "0.95", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "lowest accuracy first" in result.stdout and "95.0%" in result.stdout
    assert "97.5%" in run_cli("advise", run, "--target", "97.5%").stdout


@pytest.mark.parametrize("target, words", [("150%", "at most 1"), ("1.5", "at most 1"),
                                           ("95", "give 0.95"), ("-3", "above 0"),
                                           ("abc", "such as 0.92")])
def test_a_target_that_is_not_an_accuracy_is_one_line(run, target, words):
    failed(run_cli("advise", run, "--target", target), "--target", words)


def test_a_run_without_a_model_is_one_line(run):
    shutil.rmtree(run / "model")
    failed(run_cli("advise", run), "model")


# --- the next steps, on made-up rows ---------------------------------------------------------

class _Found:
    """What `_next_steps` reads of a Cleaning."""

    def __init__(self, problems: list[str]) -> None:
        self.findings = [type("F", (), {"problem": p, "class_id": "a"})() for p in problems]
        self.duplicates = []


def _row(name, train, valid, accuracy, mislabelled=0, outliers=0, more=None):
    needed = PhotosNeeded(name, train, accuracy, 0.9, None if more is None else train + more,
                          more, None if more is None else more // 2,
                          None if more is None else more * 2,
                          "" if more is not None else "the fit cannot say")
    return ClassAdvice(name, name, train, valid, accuracy, "other", 0.3, mislabelled, outliers,
                       0, needed)


def _steps(rows, problems=(), accuracy=0.8, target=0.9):
    advice = Advice(Path("runs/x"), accuracy, target, rows, [])
    advice.imbalance = advising._imbalance(rows)
    return advising._next_steps(advice, _Found(list(problems)))


def test_the_class_that_costs_most_accuracy_comes_first_in_plain_words():
    steps = _steps([_row("beagle", 100, 50, 0.5, more=120), _row("dingo", 100, 50, 0.85),
                    _row("pug", 100, 50, 0.95)])
    assert steps[0].startswith("Add about 120 photos of beagle")
    assert "confused with other 30% of the time" in steps[0]
    assert not any("pug" in s for s in steps)  # above the target: nothing to do


def test_validation_copies_of_training_photos_come_first_when_they_are_many():
    steps = _steps([_row("beagle", 100, 50, 0.85), _row("dingo", 100, 50, 0.88)],
                   problems=["duplicate across train and valid"] * 20)
    assert steps[0].startswith("Remove the 20 validation photos")


def test_mislabelled_and_outliers_are_counted_and_at_most_three_steps():
    rows = [_row("beagle", 100, 50, 0.5, mislabelled=30, outliers=10, more=40),
            _row("dingo", 100, 50, 0.6, more=30), _row("pug", 100, 50, 0.7, more=20)]
    steps = _steps(rows)
    assert len(steps) == 3
    assert any("30 photos that look mislabelled" in s for s in steps)


def test_a_class_the_curve_cannot_count_says_so():
    steps = _steps([_row("beagle", 10, 50, 0.4)])
    assert "not enough data to say" in steps[0]


def test_imbalance_suggests_balance_for_small_classes_below_the_average():
    steps = _steps([_row("beagle", 300, 50, 0.95), _row("dingo", 20, 50, 0.5)],
                   accuracy=0.75, target=0.8)
    assert any("--balance weights" in s and "dingo" in s for s in steps)


def test_nothing_to_do_is_said_not_left_empty():
    advice = Advice(Path("runs/x"), 0.99, 0.99, [_row("beagle", 100, 50, 0.99)], [])
    assert "Nothing stands out" in advice.summary()


@pytest.mark.parametrize("command", ["advise", "clean"])
def test_without_the_advice_extra_it_is_one_line_before_any_work(run, command, monkeypatch):
    """A newcomer who installed only the first README command: one line naming the extra,
    before the features pass (nothing is written into RUN/advice/)."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "cleanlab" else real(name, *a))
    (run / "advice" / "features.safetensors").unlink(missing_ok=True)
    failed(run_cli(command, run), "cleanlab is not installed", "clearclass[advice]")
    assert not (run / "advice" / "features.safetensors").exists()
