from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

import clearclass
from clearclass.errors import ClearclassError, RunError
from clearclass.evaluation import Evaluation, evaluate


def _evaluation(targets, predictions, n_classes=4) -> Evaluation:
    probs = np.full((len(targets), n_classes), 0.1 / (n_classes - 1))
    probs[np.arange(len(targets)), predictions] = 0.9
    names = [f"class {i}" for i in range(n_classes)]
    return Evaluation([f"c{i}" for i in range(n_classes)], names,
                      [Path(f"{i}.jpg") for i in range(len(targets))], np.array(targets), probs)


def test_confusion_and_most_confused_from_known_predictions():
    ev = _evaluation(targets=[0, 0, 0, 1, 1, 2, 2, 2, 3],
                     predictions=[0, 1, 1, 1, 0, 2, 1, 3, 3])
    assert ev.accuracy == pytest.approx(4 / 9)
    matrix = ev.confusion()
    assert matrix[0].tolist() == [1, 2, 0, 0]
    assert matrix.sum() == 9
    pairs = [(p.actual, p.predicted, p.count) for p in ev.most_confused()]
    assert pairs[0] == ("class 0", "class 1", 2)
    assert sorted(pairs[1:]) == [("class 1", "class 0", 1), ("class 2", "class 1", 1),
                                 ("class 2", "class 3", 1)]


def test_per_class_precision_recall_f1():
    ev = _evaluation(targets=[0, 0, 1, 1], predictions=[0, 1, 1, 1], n_classes=2)
    rows = {r["class_id"]: r for r in ev.per_class()}
    assert rows["c0"]["precision"] == 1.0 and rows["c0"]["recall"] == 0.5
    assert rows["c1"]["precision"] == pytest.approx(2 / 3) and rows["c1"]["recall"] == 1.0
    assert rows["c1"]["f1"] == pytest.approx(0.8)
    assert rows["c0"]["support"] == 2


def test_top_k_accuracy_and_top_losses():
    ev = _evaluation(targets=[0, 1, 2], predictions=[0, 2, 2])
    assert ev.top_k_accuracy(1) == pytest.approx(2 / 3)
    assert ev.top_k_accuracy(4) == 1.0
    assert ev.top_losses(1) == [1]


def test_evaluate_writes_the_whole_report(trained_run):
    ev = clearclass.evaluate(trained_run)
    report = trained_run / "report"
    for name in ("confusion.png", "most_confused.csv", "most_confused.png", "top_losses.png",
                 "per_class.csv", "calibration.png", "index.html"):
        assert (report / name).is_file(), name
    with open(report / "per_class.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["class_id"] for r in rows) == ["blue", "green", "red"]
    assert [r["class_id"] for r in rows] == [ev.class_ids[i] for i in ev.view_order()]
    assert sum(int(r["support"]) for r in rows) == len(ev.targets) == 12
    html = (report / "index.html").read_text()
    assert "data:image/png;base64," in html and "data:image/jpeg;base64," in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing fetched from anywhere
    assert html.count('class="count"') == np.count_nonzero(ev.confusion())  # few classes: counts
    with open(report / "most_confused.csv", newline="") as f:
        assert next(csv.reader(f)) == ["actual", "predicted", "count", "rate"]
    assert ev.tta_accuracy is None and "test-time" not in ev.summary()


def test_tta_reports_the_accuracy_of_photo_and_mirror_image(trained_run, tmp_path):
    ev = clearclass.evaluate(trained_run, tta=True, report=tmp_path / "tta-report")
    assert ev.tta_probabilities.shape == ev.probabilities.shape
    assert not np.allclose(ev.tta_probabilities, ev.probabilities)  # the mirror image counted
    assert np.allclose(ev.tta_probabilities.sum(1), 1.0)
    assert f"with test-time augmentation {ev.tta_accuracy:.2%}" in ev.summary()
    assert "Accuracy with test-time augmentation" in (tmp_path / "tta-report" /
                                                      "index.html").read_text()


def test_evaluate_on_another_labelled_folder_matches_classes_by_name(trained_run, tmp_path,
                                                                     caplog):
    from tests.conftest import COLOURS, make_photo

    test = tmp_path / "test photos"
    for i in range(3):
        make_photo(test / "red" / f"{i}.jpg", COLOURS["red"], seed=900 + i)
        make_photo(test / "GREEN" / f"{i}.jpg", COLOURS["green"], seed=910 + i)  # by name
        make_photo(test / "purple" / f"{i}.jpg", (120, 0, 160), seed=920 + i)  # unknown
    ev = clearclass.evaluate(trained_run, data=test)
    assert len(ev.targets) == 6 and ev.source == f"photos of {test}"
    assert sorted({ev.class_ids[t] for t in ev.targets}) == ["green", "red"]
    assert "purple (3 photos)" in caplog.text and "left out" in caplog.text
    assert "blue" in caplog.text  # a class of the model with no photo is named too
    assert ev.report_dir == trained_run / "report-test-photos"
    assert (ev.report_dir / "index.html").is_file()
    assert (trained_run / "report").is_dir()  # the validation report stays


def test_a_test_set_with_its_own_split_counts_only_its_held_out_photos(trained_run, tmp_path):
    """Stanford Dogs' labels.csv marks the official test list is_valid: only those count."""
    import shutil

    rows = []
    for colour in ("red", "green", "blue"):
        for i, photo in enumerate(sorted((trained_run.parent).glob(f"**/{colour}/*.jpg"))[:4]):
            target = tmp_path / "dogs" / "Images" / colour / photo.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(photo, target)
            rows.append(f"Images/{colour}/{photo.name},{colour},{i % 2 == 0}")
    (tmp_path / "dogs" / "labels.csv").write_text("path,label,is_valid\n" + "\n".join(rows))
    ev = clearclass.evaluate(trained_run, data=tmp_path / "dogs" / "labels.csv")
    assert len(ev.targets) == 6 == sum(r.endswith("True") for r in rows)
    assert ev.report_dir.name == "report-dogs"


def test_a_folder_whose_classes_match_none_is_refused(trained_run, tmp_path):
    from clearclass.errors import DataError
    from tests.conftest import make_dataset

    data = make_dataset(tmp_path / "other", per_class=2, classes=("cat", "dog"))
    with pytest.raises(DataError, match="None of the 2 classes of .* is a class of this model"):
        clearclass.evaluate(trained_run, data=data)


@pytest.mark.slow  # draws figures of many classes
def test_many_classes_still_make_readable_figures(tmp_path):
    from clearclass import figures

    rng = np.random.default_rng(0)
    n = 120
    targets = rng.integers(0, n, 2000)
    predictions = np.where(rng.random(2000) < 0.8, targets, rng.integers(0, n, 2000))
    ev = _evaluation(targets.tolist(), predictions.tolist(), n_classes=n)
    figures.save(ev.plot_confusion_matrix(), tmp_path / "c.png")
    figures.save(ev.plot_most_confused(pairs=10), tmp_path / "m.png")
    from PIL import Image

    width, height = Image.open(tmp_path / "c.png").size
    assert width >= 1800 and height >= 1800  # room for 120 labels
    assert Image.open(tmp_path / "m.png").size[0] < width


def test_evaluate_needs_a_run_folder(tmp_path):
    with pytest.raises(RunError, match="not a training run"):
        clearclass.evaluate(tmp_path)


def test_an_edited_split_is_read_with_the_same_is_valid_words_as_a_csv(trained_run, tmp_path):
    """split.csv edited in a spreadsheet (1/0, yes/no) means what it means in DATA's CSV, in
    a run trained before config.json recorded its checksum (a run since refuses any edit:
    tests/robustness/test_run_integrity.py)."""
    import json
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    config = json.loads((run / "config.json").read_text())
    del config["split_sha256"]
    (run / "config.json").write_text(json.dumps(config))
    with open(run / "split.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    words = {"True": "1", "False": "no"}
    with open(run / "split.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", "is_valid"])
        writer.writeheader()
        writer.writerows({**r, "is_valid": words[r["is_valid"]]} for r in rows)
    ev = clearclass.evaluate(run)
    assert len(ev.targets) == sum(r["is_valid"] == "True" for r in rows) == 12


@pytest.mark.parametrize("content", [b"", b"a,b\n1,2\n", b"path,label,is_valid\nx.jpg,red,maybe\n",
                                     b"\xff\xfe\x00garbage"])
def test_a_damaged_split_is_named(trained_run, tmp_path, content):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "split.csv").write_bytes(content)
    with pytest.raises(ClearclassError, match="split.csv"):
        evaluate(run, device="cpu")


def test_test_classes_match_by_id_then_display_name_then_wordnet_id(tmp_path, caplog):
    from clearclass.evaluation import labelled_photos
    from tests.conftest import make_photo

    for folder in ("n02086240", "Beagle", "n02099601-golden_retriever", "n01234567-Pug"):
        for i in range(2):
            make_photo(tmp_path / "test" / folder / f"{i}.jpg", seed=i)
    model = ["n02086240-Shih-Tzu", "n02088364-beagle", "n02099601-golden_retriever"]
    photos = labelled_photos(tmp_path / "test", model)
    assert sorted({label for _, label in photos}) == model
    assert len(photos) == 6
    assert "n01234567-Pug (2 photos)" in caplog.text
