"""advise on a multi-label run (issue 25): a row per label measured by F1, the labels clean
disputes counted under each, learning curves per label, rare labels named."""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import pytest

from clearclass.advice import advising
from clearclass.advice.advising import MULTI_LABEL_COLUMNS, Advice, ClassAdvice, advise
from clearclass.advice.learning_curve import PhotosNeeded
from tests.conftest import run_cli


@pytest.fixture
def run(mislabelled_multi_label_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(mislabelled_multi_label_run, copy)
    return copy


def test_a_row_per_label_with_its_f1_and_the_disputed_labels_counted(run):
    advice = advise(run, device="cpu")
    assert advice.is_multi_label and advice.metric == "F1"
    assert [r.class_id for r in advice.classes] == ["blue", "green", "red"]
    # Photos with each label: the 8 of each set that has it, less or more the planted ones.
    assert [r.train_photos + r.valid_photos for r in advice.classes] == [32 - 1 + 1, 32, 32]
    assert all(r.accuracy is None or 0 <= r.accuracy <= 1 for r in advice.classes)
    # Both planted photos are wrong about blue (one lacks it, one has it wrongly).
    assert {r.class_id: r.mislabelled for r in advice.classes} == {
        "blue": 2, "green": 0, "red": 0}
    assert any("2 photos whose labels look wrong (2 about blue)" in s
               for s in advice.next_steps)
    assert advice.photos is not None and advice.photos.curves.metric == "F1"
    assert [n.class_id for n in advice.photos.per_class] == ["blue", "green", "red"]
    with open(run / "advice" / "classes.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == MULTI_LABEL_COLUMNS and len(rows) == 4
    page = (run / "advice" / "index.html").read_text()
    assert "Labels, lowest F1 first" in page and "Micro F1" in page
    assert "one per label" in page  # the learning curves say how they were drawn
    assert "Labels, lowest F1 first" in advice._repr_html_()
    summary = advice.summary()
    assert "micro F1" in summary and "Per label:" in summary


def test_the_command_prints_the_labels(run):
    result = run_cli("advise", run, "--device", "cpu", "--target", "0.9")
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stdout.split())
    assert "Labels, lowest F1 first" in said and "counted for F1 90.0%" in said


def _row(name, train, valid, f1, more=None):
    needed = PhotosNeeded(name, train, f1, 0.9, None if more is None else train + more, more,
                          None if more is None else train + more // 2,
                          None if more is None else train + more * 2,
                          "" if more is not None else "not enough data to say: a reason")
    return ClassAdvice(name, name, train, valid, f1, "other", 0.25, 0, 0, 0, needed)


class _Found:
    """What `_next_steps` reads of a Cleaning: no finding, 100 photos checked."""

    findings: list = []
    duplicates: list = []
    checked = Counter({"train": 80, "valid": 20})


def test_next_steps_speak_of_photos_with_a_label_and_its_f1():
    rows = [_row("cat", 60, 15, 0.5, more=40), _row("dog", 70, 18, 0.95)]
    advice = Advice(Path("runs/x"), 0.8, 0.9, rows, [], task="multi")
    steps = advising._next_steps(advice, _Found())
    assert steps[0].startswith("Add about 40 photos with cat")
    assert "to bring its F1 from 50% to 90%" in steps[0]
    assert "where it is missed, other is predicted instead (on 25% of its photos)" in steps[0]


def test_rare_labels_are_named_with_photos_and_no_balance_option():
    rows = [_row("cat", 90, 20, 0.9), _row("dog", 80, 20, 0.88), _row("fox", 10, 4, 0.3)]
    imbalance = advising._label_imbalance(rows, 120)
    assert imbalance.startswith("The labels are imbalanced: cat is on 90 training photos")
    assert "fox on 10 of 120 (110 without it)" in imbalance
    advice = Advice(Path("runs/x"), 0.8, 0.9, rows, [], imbalance, task="multi")
    steps = advising._next_steps(advice, _Found())
    rare = next(s for s in steps if "rare label" in s)
    assert "Add photos with the rare label fox" in rare and "--balance is for one" in rare
    assert not any("Train again with --balance" in s for s in steps)
