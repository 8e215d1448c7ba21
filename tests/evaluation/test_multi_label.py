"""Evaluation of a multi-label model (evaluation/multi_label.py): per-label figures equal to
scikit-learn's on the same probabilities, the labels given in place of others counted on a
hand-made example, and a tiny multi-label run evaluated end to end (its report, results.json,
--tta, --data with a multi-label CSV, the trackers)."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import clearclass
from clearclass.errors import DataError
from clearclass.evaluation import MultiLabelEvaluation, evaluate
from clearclass.evaluation.results import read_results
from tests.conftest import make_multi_label_dataset, make_photo
from tests.evaluation.synthetic import GROUP, multi_label_groups

MULTI_LABEL_FILES = {"index.html", "results.json", "per_label.csv", "confused_labels.csv",
                     "precision_recall.png", "label_errors.png", "most_confused.png",
                     "top_losses.png", "calibration.png"}


def _evaluation(targets, probabilities, thresholds=0.5, names="abcd",
                photos: Path | None = None) -> MultiLabelEvaluation:
    """Labels a, b, ... with these targets and probabilities; with `photos`, a generated
    photo for each there (a report shows them), else paths that do not exist."""
    targets, probabilities = np.array(targets), np.array(probabilities, dtype=float)
    labels = list(names[:targets.shape[1]])
    paths = [(photos or Path()) / f"{i}.jpg" for i in range(len(targets))]
    if photos is not None:
        for i, path in enumerate(paths):
            make_photo(path, seed=i)
    return MultiLabelEvaluation(labels, labels, paths, targets, probabilities, thresholds)


def test_labels_given_in_place_of_others_are_counted_per_photo():
    """(A missed, B given) counts a photo that has A and is not given it, and is given B
    without having it: every such pair on the photo, once."""
    ev = _evaluation(
        targets=[[1, 1, 0, 0],   # has a, b; given b, c: a missed, c given instead
                 [1, 0, 0, 0],   # has a; given c, d: a missed, c and d given instead
                 [0, 1, 0, 0],   # has b; given nothing: b missed, nothing given instead
                 [0, 0, 0, 0],   # has nothing; given a: wrongly given, nothing missed
                 [0, 0, 1, 0],   # has c; given a: c missed, a given instead
                 [1, 0, 1, 0]],  # has a, c; given a, c: right
        probabilities=[[0.2, 0.9, 0.7, 0.1],
                       [0.4, 0.1, 0.8, 0.6],
                       [0.1, 0.3, 0.2, 0.2],
                       [0.9, 0.1, 0.1, 0.1],
                       [0.8, 0.2, 0.1, 0.3],
                       [0.7, 0.2, 0.9, 0.1]])
    pairs = [(p.missed, p.given, p.count, p.rate) for p in ev.most_confused()]
    assert pairs == [("a", "c", 2, pytest.approx(2 / 3)), ("c", "a", 1, pytest.approx(1 / 2)),
                     ("a", "d", 1, pytest.approx(1 / 3))]
    matrix = ev.confusion_pairs()
    assert matrix.sum() == 4 and np.all(np.diag(matrix) == 0)
    assert ev.pair_photos(0, 2) == [1, 0]  # photo 1 has the higher loss
    rows = {r["name"]: r for r in ev.per_label()}
    assert [rows[n]["missed"] for n in "abcd"] == [2, 1, 1, 0]
    assert [rows[n]["wrongly_given"] for n in "abcd"] == [2, 0, 2, 1]
    assert rows["a"]["given_instead"] == "c" and rows["a"]["given_instead_count"] == 2
    assert rows["b"]["given_instead"] == ""  # missed, but nothing given in its place
    assert [r["name"] for r in ev.most_missed()] == ["a", "b", "c"]
    assert [r["name"] for r in ev.most_wrongly_given()] == ["a", "c", "d"]
    assert ev.label_photos(0) == ([0, 1], [3, 4])  # missed: least probable first
    summary = ev.summary()
    assert "a -> c: 2 (67%)" in summary and "Most missed: a 2 of 3" in summary


def test_per_label_figures_and_scores_are_scikit_learns():
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        f1_score,
        multilabel_confusion_matrix,
        precision_recall_curve,
        precision_recall_fscore_support,
    )

    ev, _ = multi_label_groups(n=12, photos_count=300)
    decided = ev.probabilities >= ev.thresholds
    precision, recall, f1, support = precision_recall_fscore_support(
        ev.targets, decided, average=None, zero_division=0)
    confusion = multilabel_confusion_matrix(ev.targets, decided)
    rows = {r["class_id"]: r for r in ev.per_label()}
    assert sorted(rows) == sorted(ev.class_ids)
    for j, class_id in enumerate(ev.class_ids):
        row = rows[class_id]
        assert row["threshold"] == ev.thresholds[j]
        assert row["support"] == support[j]
        assert row["f1"] == pytest.approx(f1[j])
        assert [[row["rightly_left"], row["wrongly_given"]], [row["missed"], row["found"]]] \
            == confusion[j].tolist()
        # Undefined where scikit-learn puts its zero_division (0), and nowhere else.
        if decided[:, j].any():
            assert row["precision"] == pytest.approx(precision[j])
        else:
            assert row["precision"] is None and precision[j] == 0
        if support[j]:
            assert row["recall"] == pytest.approx(recall[j])
            assert row["average_precision"] == pytest.approx(
                average_precision_score(ev.targets[:, j], ev.probabilities[:, j]))
            curve = ev.precision_recall_curves()[j]
            expected = precision_recall_curve(ev.targets[:, j], ev.probabilities[:, j])
            assert np.allclose(curve[0], expected[0][:-1][::-1])
            assert np.allclose(curve[1], expected[1][:-1][::-1])
        else:
            assert row["recall"] is None and row["average_precision"] is None
            assert ev.precision_recall_curves()[j] is None
    assert any(r["recall"] is None for r in rows.values())  # the test has such a label
    scores = ev.scores()
    assert scores["f1_micro"] == pytest.approx(f1_score(ev.targets, decided, average="micro"))
    assert scores["f1_macro"] == pytest.approx(
        f1_score(ev.targets, decided, average="macro", zero_division=0))
    assert scores["exact_match"] == pytest.approx(accuracy_score(ev.targets, decided))
    with_photos = ev.targets.any(0)
    assert scores["mean_ap"] == pytest.approx(average_precision_score(
        ev.targets[:, with_photos], ev.probabilities[:, with_photos], average="macro"))
    assert scores["accuracy"] == pytest.approx(1 - np.mean(decided != ev.targets))


def test_the_loss_of_a_photo_is_trainings():
    import torch

    from clearclass.task import MultiLabel

    ev, _ = multi_label_groups(n=6, photos_count=40)
    logits = np.log(ev.probabilities / (1 - ev.probabilities))
    expected = MultiLabel().loss(torch.tensor(logits),
                                 torch.tensor(ev.targets, dtype=torch.float32), reduction="none")
    assert np.allclose(ev.losses, expected.numpy(), atol=1e-5)
    assert ev.top_losses(3) == np.argsort(-expected.numpy(), kind="stable")[:3].tolist()


def test_labels_given_in_place_of_each_other_sit_side_by_side():
    """The per-label table's order, as a single-label report orders its classes: labels
    given in place of each other (here within groups of 4) end up together."""
    ev, group = multi_label_groups(n=40, photos_count=2000, seed=1)
    place = np.empty(40, dtype=int)
    place[ev.view_order()] = np.arange(40)
    together = sum(np.ptp(place[group == g]) == GROUP - 1 for g in np.unique(group))
    assert together >= 8, together  # of 10 groups
    # The names' order scatters the groups: the test would pass for the wrong reason otherwise.
    assert sum(np.ptp(np.flatnonzero(group == g)) == GROUP - 1 for g in np.unique(group)) <= 2
    assert [r["position"] for r in ev.per_label()] == list(range(40))


def test_a_label_on_no_photo_is_undefined_everywhere(tmp_path):
    ev = _evaluation(targets=[[1, 0, 0], [1, 0, 0], [0, 1, 0]],
                     probabilities=[[0.9, 0.2, 0.6], [0.3, 0.1, 0.1], [0.2, 0.8, 0.1]],
                     photos=tmp_path / "photos")
    report = clearclass.evaluation.write_report(ev, tmp_path / "report", top_losses=2)
    with open(report / "per_label.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["class_id"] == "c")
    assert row["recall"] == row["average_precision"] == "" and row["precision"] == "0.0000"
    html = (report / "index.html").read_text()
    assert html.count(">undefined</td>") == 2
    for text in (html, (report / "results.json").read_text(), ev.summary(), ev._repr_html_()):
        assert not re.search(r"\bnan\b", text, re.IGNORECASE)


# --- a multi-label run, end to end ------------------------------------------------------------

def test_evaluate_a_multi_label_run_writes_its_report(trained_multi_label_run):
    run = trained_multi_label_run
    ev = clearclass.evaluate(run, device="cpu")
    assert isinstance(ev, MultiLabelEvaluation)
    model = json.loads((run / "model" / "model.json").read_text())
    assert ev.thresholds.tolist() == [c["threshold"] for c in model["classes"]]
    assert len(set(ev.thresholds.tolist())) > 1  # --threshold auto: one per label
    assert set(p.name for p in ev.report_dir.iterdir()) == MULTI_LABEL_FILES
    results = read_results(ev.report_dir)
    assert set(results) >= {"source", "photos", "accuracy", "tta_accuracy", "f1_micro",
                            "f1_macro", "mean_ap", "exact_match", "run_id", "task"}
    # What training measured on the same photos with the same thresholds.
    with open(run / "metrics.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]
    for name in ("accuracy", "f1_micro", "f1_macro", "mean_ap"):
        assert results[name] == pytest.approx(float(last[name]), abs=1e-5), name
    assert results["tta_accuracy"] is None and results["photos"] == 9
    with open(ev.report_dir / "per_label.csv", newline="") as f:
        assert sorted(r["class_id"] for r in csv.DictReader(f)) == ["blue", "green", "red"]
    html = (ev.report_dir / "index.html").read_text()
    assert 'id="per-class"' in html and "Confusion matrix" not in html
    assert html.count('<tr class="label"') == 3
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing fetched from anywhere
    assert "accuracy_multi" in ev.summary() and "Report:" in ev.summary()
    shown = ev._repr_html_()
    assert "F1 macro" in shown and "data:image/png;base64," in shown


def test_tta_scores_a_multi_label_run_again_after_averaging(trained_multi_label_run, tmp_path):
    ev = clearclass.evaluate(trained_multi_label_run, tta=True, device="cpu",
                             report=tmp_path / "tta")
    assert ev.tta_probabilities.shape == ev.probabilities.shape
    assert not np.allclose(ev.tta_probabilities, ev.probabilities)  # the mirror image counted
    results = read_results(tmp_path / "tta")
    tta = ev.tta_scores()
    for name in ("accuracy", "f1_micro", "f1_macro", "mean_ap", "exact_match"):
        assert results[f"tta_{name}"] == pytest.approx(tta[name])
    assert "With test-time augmentation: accuracy_multi" in ev.summary()
    assert "With test-time augmentation" in (tmp_path / "tta" / "index.html").read_text()


def _test_csv(folder: Path, unknown: str | None = "purple") -> tuple[Path, list[tuple]]:
    """A test CSV of new striped photos whose labels are rotated (red listed as green, ...)
    on every other photo, so that the model's answers and the labels disagree; `unknown` is
    added to the labels of every third photo. Returns it and its rows (file, labels)."""
    source = make_multi_label_dataset(folder, per_set=2, size=(56, 44))
    rotate = {"red": "green", "green": "blue", "blue": "red"}
    rows = []
    with open(source, newline="") as f:
        for k, row in enumerate(csv.DictReader(f)):
            labels = [c for c in row["label"].split(";") if c]
            if k % 2:
                labels = [rotate[c] for c in labels]
            if unknown and k % 3 == 0:
                labels.append(unknown)
            rows.append((row["path"], tuple(labels)))
    with open(source, "w", newline="") as f:
        csv.writer(f).writerows([("path", "label"),
                                 *((p, ";".join(labels)) for p, labels in rows)])
    return source, rows


def test_evaluate_data_reads_a_multi_label_csv(trained_multi_label_run, tmp_path, caplog):
    from sklearn.metrics import average_precision_score, precision_recall_fscore_support

    test, rows = _test_csv(tmp_path / "test")
    ev = evaluate(trained_multi_label_run, data=test, device="cpu")
    assert ev.report_dir == trained_multi_label_run / "report-test"
    assert len(ev.paths) == len(rows) == 16  # the photos with the unknown label stay
    by_file = {Path(p).name: labels for p, labels in rows}
    for path, target in zip(ev.paths, ev.targets):
        assert ev.labels_of(target) == sorted(c for c in by_file[path.name] if c != "purple")
    assert "purple (6 photos)" in caplog.text and "left out of the photos' labels" in caplog.text
    # The figures on these photos are scikit-learn's.
    decided = ev.probabilities >= ev.thresholds
    precision, recall, f1, support = precision_recall_fscore_support(
        ev.targets, decided, average=None, zero_division=0)
    rows = {r["class_id"]: r for r in ev.per_label()}
    for j, row in enumerate(rows[c] for c in ev.class_ids):
        assert (row["recall"], row["f1"], row["support"]) == (
            pytest.approx(recall[j]), pytest.approx(f1[j]), support[j])
        assert row["average_precision"] == pytest.approx(
            average_precision_score(ev.targets[:, j], ev.probabilities[:, j]))
    assert read_results(ev.report_dir)["photos"] == 16
    # (tests/robustness/test_multi_label_report.py runs the command on such a CSV.)


def test_a_test_csv_may_separate_its_labels_otherwise_than_the_run(trained_multi_label_run,
                                                                   tmp_path, caplog):
    """`evaluate RUN --data test.csv --label-delimiter '|'`: a test CSV written with '|' for
    a run trained on ';' is read as the sets it lists, as the same photos with ';' are
    under the run's own delimiter. Without the option a cell "blue|red" is one label the
    model does not know."""
    from clearclass.run_folder import RunFolder
    from tests.conftest import run_cli

    run = trained_multi_label_run
    config = RunFolder(run).config()
    assert config.label_delimiter in (None, ";") and ";" in Path(config.data).read_text()
    semicolons = make_multi_label_dataset(tmp_path / "semicolons", per_set=2, size=(56, 44))
    bars = make_multi_label_dataset(tmp_path / "bars", per_set=2, size=(56, 44),
                                    delimiter="|")
    assert "blue|red" in bars.read_text() and ";" not in bars.read_text()
    expected = evaluate(run, data=semicolons, device="cpu", report=tmp_path / "r1")
    got = evaluate(run, data=bars, device="cpu", label_delimiter="|", report=tmp_path / "r2")
    assert got.targets.sum() > len(got.targets)  # photos with two labels and more
    np.testing.assert_array_equal(got.targets, expected.targets)
    assert got.scores() == expected.scores()
    caplog.clear()
    without = evaluate(run, data=bars, device="cpu", report=tmp_path / "r3")
    assert without.targets.sum() < got.targets.sum()
    assert "blue|red" in caplog.text and "left out of the photos' labels" in caplog.text
    # The command line, as a user types it: the same figures.
    result = run_cli("evaluate", run, "--data", bars, "--label-delimiter", "|", "--device",
                     "cpu")
    assert result.returncode == 0, result.stderr
    assert read_results(run / "report-bars")["accuracy"] == pytest.approx(
        got.scores()["accuracy"])


def test_a_label_delimiter_is_refused_where_it_reads_nothing(trained_run,
                                                             trained_multi_label_run,
                                                             tmp_path):
    """One line each, as train's rule says it: not one character, no --data to read, a
    single-label run (whose label cells are read whole)."""
    from tests.conftest import failed, run_cli

    source = make_multi_label_dataset(tmp_path / "bars", per_set=1, size=(56, 44),
                                      delimiter="|")
    run = trained_multi_label_run
    failed(run_cli("evaluate", run, "--data", source, "--label-delimiter", "||"),
           "--label-delimiter must be one character, such as ';' or ' '; got '||'")
    failed(run_cli("train", source, "--label-delimiter", "||"),
           "--label-delimiter must be one character, such as ';' or ' '; got '||'")
    failed(run_cli("evaluate", run, "--label-delimiter", "|"),
           "--label-delimiter is for reading the labels CSV given as data")
    failed(run_cli("evaluate", trained_run, "--data", source, "--label-delimiter", "|",
                   "--device", "cpu"),
           "--label-delimiter is for multi-label runs", "gives one class per photo")


def test_a_test_csv_with_none_of_the_models_labels_is_refused(trained_multi_label_run, tmp_path):
    source = make_multi_label_dataset(tmp_path / "other", per_set=1, size=(56, 44))
    text = source.read_text().replace("red", "cat").replace("green", "dog").replace("blue", "owl")
    source.write_text(text)
    with pytest.raises(DataError, match="None of the 3 labels of .* is a label of this model"):
        evaluate(trained_multi_label_run, data=source, device="cpu")


def test_list_photos_reads_a_csv_as_the_models_task(tmp_path):
    from clearclass.data.sources import list_photos
    from tests.conftest import make_dataset

    source = make_multi_label_dataset(tmp_path / "stripes", per_set=1)
    multi = list_photos(source, task="multi")
    assert multi.task == "multi" and multi.class_ids == ["blue", "green", "red"]
    assert sorted(p.labels for p in multi.photos)[:2] == [(), ("blue",)]
    with_labels = make_multi_label_dataset(tmp_path / "labelled", per_set=1,
                                           sets=(("red",), ("blue", "red")))
    single = list_photos(with_labels)  # a cell is one label, as before: "blue;red" too
    assert single.task == "single" and single.class_ids == ["blue;red", "red"]
    folders = list_photos(make_dataset(tmp_path / "colours", per_class=1), task="multi")
    assert folders.task == "single" and "exactly one label" in folders.notes[-1]


def test_the_trackers_get_the_multi_label_figures(trained_multi_label_run, tmp_path):
    from clearclass.tracking import track_evaluation
    from tests.conftest import tensorboard_events

    run = tmp_path / "run"
    shutil.copytree(trained_multi_label_run, run)
    ev = evaluate(run, device="cpu", tta=True)
    track_evaluation(run, ["tensorboard"], ev, ev.report_dir, epochs_done=2)
    events = tensorboard_events(run / "tensorboard")
    for name in ("accuracy", "f1_micro", "f1_macro", "mean_ap", "tta_accuracy", "tta_mean_ap"):
        assert events.Scalars(f"evaluation/{name}")[0].value == pytest.approx(
            ev.tracked_scores()[name], abs=1e-6), name
    assert {"evaluation/precision_recall", "evaluation/label_errors",
            "evaluation/top_losses"} <= set(events.Tags()["images"])
    table = events.Tensors("evaluation/per_class/text_summary")[0].tensor_proto.string_val[0]
    assert b"| label | precision | recall | F1 | AP | photos |" in table
    # `clearclass runs` lists the accuracy with test-time augmentation: accuracy_multi's.
    assert clearclass.runs(run).rows[0].tta_accuracy == pytest.approx(ev.tta_accuracy)


def test_exclude_training_leaves_out_the_photos_a_multi_label_run_trained_on(
        trained_multi_label_run, caplog):
    from clearclass.run_folder import RunFolder

    split = RunFolder.open(trained_multi_label_run).split()
    data = json.loads((trained_multi_label_run / "config.json").read_text())["config"]["data"]
    ev = evaluate(trained_multi_label_run, data=data, exclude_training=True, device="cpu",
                  report=trained_multi_label_run.parent / "report-unseen")
    assert sorted(ev.paths) == sorted(p.path for p in split.valid)
    assert [ev.labels_of(t) for t in ev.targets] == [
        list(p.labels) for p in sorted(split.valid, key=lambda p: ev.paths.index(p.path))]
    assert f"Left out {len(split.train)} of the {len(split.photos)}" in caplog.text
