"""A run trusts nothing unchecked, and `evaluate --data` is an evaluation, through the real
command line.

split.csv is under the run's integrity records (its SHA-256 in config.json): an edited split
is one error, whoever reads it (resume, evaluate, clean); so is any other file a resume reads
(the checkpoint records them), and a run from before the records still works. A test set is
not a training set: one class or one photo of a class is enough, and photos the run trained
on are counted (or left out, --exclude-training).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import (
    COLOURS,
    failed,
    make_dataset,
    make_photo,
    run_cli,
    run_cli_all,
    tiny_options,
)

needs_signals = pytest.mark.skipif(not hasattr(os, "killpg"), reason="needs POSIX signals")
# The run is stopped in a real process (Ctrl-C: exit status 130); what reads it afterwards
# runs in this one (tests/conftest.run_cli).
TINY = [*tiny_options(epochs=0), "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("integrity") / "colours", per_class=8)


@pytest.fixture(scope="module")
def stopped_run(data) -> Path:
    """A run stopped by Ctrl-C after its first epoch: a model and config, a split and a
    checkpoint, so that it can be evaluated, cleaned and resumed. Tests use copies."""
    out = data.parent / "runs" / "stopped"
    settings = [*TINY[:TINY.index("--epochs")], "--epochs", "4",
                *TINY[TINY.index("--epochs") + 2:]]
    settings[settings.index("--batch-size") + 1] = "4"  # 5 steps an epoch: time to stop it
    process = subprocess.Popen([sys.executable, "-m", "clearclass", "train", str(data),
                                "--out", str(out), *settings], start_new_session=True,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while _epochs_done(out) < 1:
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "--resume" in stderr, stderr
    return out


def _epochs_done(run: Path) -> int:
    try:
        return json.loads((run / "checkpoint" / "state.json").read_text())["position"][
            "epochs_done"]
    except (OSError, ValueError, KeyError):
        return 0


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def _split_rows(run: Path) -> list[dict]:
    with open(run / "split.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _relabel_training_rows(run: Path) -> None:
    """What the hostile tester did: training labels changed in split.csv."""
    rows = _split_rows(run)
    changed = 0
    for row in rows:
        if row["is_valid"] == "False" and row["label"] == "red":
            row["label"], changed = "green", changed + 1
    assert changed
    with open(run / "split.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", "is_valid"])
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.slow  # a training stopped by Ctrl-C in a real process
@needs_signals
def test_an_edited_split_is_one_error_for_resume_evaluate_and_clean(stopped_run, tmp_path):
    run = _copy(stopped_run, tmp_path / "edited")
    _relabel_training_rows(run)
    before = {name: (run / name).read_bytes()
              for name in ("metrics.csv", "config.json", "checkpoint/state.json")}
    damaged = _copy(stopped_run, tmp_path / "damaged-record")
    config = json.loads((damaged / "config.json").read_text())
    config["split_sha256"] = 5
    (damaged / "config.json").write_text(json.dumps(config))

    resumed, evaluated, cleaned, unrecorded = run_cli_all(
        ("train", "--resume", run, "--quiet"), ("evaluate", run, "--device", "cpu"),
        ("clean", run, "--device", "cpu"), ("evaluate", damaged, "--device", "cpu"),
        in_process=True)
    for result in (resumed, evaluated, cleaned):
        failed(result, f"{run / 'split.csv'} was changed after training", "--overwrite",
               "new run")
    failed(unrecorded, "config.json", "split.csv")
    # Nothing was trained, written or reported.
    assert {name: (run / name).read_bytes() for name in before} == before
    assert not (run / "report").exists() and not (run / "clean").exists()


def _edit_config(run: Path) -> Path:
    config = json.loads((run / "config.json").read_text())
    config["config"]["epochs"] = 9  # train longer than the run was set to
    (run / "config.json").write_text(json.dumps(config, indent=2))
    return run / "config.json"


def _edit_metrics(run: Path) -> Path:
    text = (run / "metrics.csv").read_text()
    (run / "metrics.csv").write_text(text.replace(",frozen", ",unfrozen"))
    return run / "metrics.csv"


def _edit_position(run: Path) -> Path:
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    state["position"]["epochs_done"] = 3  # skip two epochs
    (run / "checkpoint" / "state.json").write_text(json.dumps(state, indent=2))
    return run / "checkpoint" / "state.json"


def _edit_weights(run: Path) -> Path:
    path = run / "checkpoint" / "state.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40  # one bit of one weight: still a valid file
    path.write_bytes(bytes(data))
    return path


@pytest.mark.slow  # a training stopped by Ctrl-C in a real process
@needs_signals
def test_a_file_edited_after_the_checkpoint_is_one_error_for_resume(stopped_run, tmp_path):
    """Whatever a resume reads besides split.csv: the settings, the epochs so far, the
    checkpoint's position and its tensors."""
    edits = (_edit_config, _edit_metrics, _edit_position, _edit_weights)
    runs = [_copy(stopped_run, tmp_path / edit.__name__) for edit in edits]
    edited = [edit(run) for edit, run in zip(edits, runs)]
    results = run_cli_all(*(("train", "--resume", run, "--quiet") for run in runs),
                          in_process=True)
    for path, result, run in zip(edited, results, runs):
        failed(result, f"{path} was changed after training", "--overwrite", "new run")
        assert (run / "checkpoint" / "state.json").exists()  # nothing was trained or saved


@pytest.mark.slow  # a training stopped by Ctrl-C in a real process
@needs_signals
def test_a_run_from_before_the_record_still_resumes_evaluates_and_cleans(stopped_run,
                                                                         tmp_path):
    run = _copy(stopped_run, tmp_path / "older")
    config = json.loads((run / "config.json").read_text())
    del config["split_sha256"]  # as every run trained before the records
    (run / "config.json").write_text(json.dumps(config))
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    del state["checksums"], state["checksum"]
    (run / "checkpoint" / "state.json").write_text(json.dumps(state))
    evaluated, cleaned = run_cli_all(("evaluate", run, "--device", "cpu"),
                                     ("clean", run, "--device", "cpu"), in_process=True)
    resumed = run_cli("train", "--resume", run)
    for result in (resumed, evaluated, cleaned):
        assert result.returncode == 0, result.stderr
        assert "split.csv was written before clearclass recorded its checksum" in result.stdout
    with open(run / "metrics.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 5  # every epoch, the resumed ones too


@pytest.mark.slow  # a training stopped by Ctrl-C in a real process
@needs_signals
def test_evaluate_data_with_one_class_or_one_photo_per_class(stopped_run, tmp_path):
    """A test set may hold any of the model's classes, with any number of photos."""
    one_class, one_each = tmp_path / "one class", tmp_path / "one each"
    for i in range(3):
        make_photo(one_class / "red" / f"{i}.jpg", COLOURS["red"], seed=700 + i)
    for i, colour in enumerate(("red", "green", "blue")):
        make_photo(one_each / colour / "only.jpg", COLOURS[colour], seed=800 + i)
    make_photo(one_each / "purple" / "only.jpg", (120, 0, 160), seed=900)  # no such class
    by_class, by_photo = run_cli_all(
        ("evaluate", stopped_run, "--data", one_class, "--device", "cpu"),
        ("evaluate", stopped_run, "--data", one_each, "--device", "cpu"), in_process=True)
    assert by_class.returncode == 0, by_class.stderr
    assert re.search(r"Accuracy \d+\.\d\d% on 3 photos of", by_class.stdout), by_class.stdout
    assert "trained on" not in by_class.stderr  # new photos: no warning
    assert by_photo.returncode == 0, by_photo.stderr
    assert re.search(r"Accuracy \d+\.\d\d% on 3 photos of", by_photo.stdout), by_photo.stdout
    assert "purple (1 photos)" in by_photo.stderr and "left out" in by_photo.stderr


@pytest.mark.slow  # a training stopped by Ctrl-C in a real process
@needs_signals
def test_evaluate_on_the_runs_own_training_photos_warns_and_can_leave_them_out(
        data, stopped_run, tmp_path):
    """The tester's case: DATA itself as the test set. A copy of a training photo under
    another name counts too."""
    test = tmp_path / "test"
    test.mkdir()
    (test / "red").symlink_to(data / "red", target_is_directory=True)  # the same files
    for colour in ("green", "blue"):
        shutil.copytree(data / colour, test / colour)  # copies of their bytes
    rows = _split_rows(stopped_run)
    trained = [Path(r["path"]) for r in rows if r["is_valid"] == "False"]
    green = next(p for p in trained if p.parent.name == "green")
    shutil.copy(green, test / "blue" / "copy.jpg")  # a copy under another name, and label
    total = sum(1 for _ in test.glob("*/*.jpg"))
    seen, copies = len(trained) + 1, sum(p.parent.name != "red" for p in trained) + 1
    warned, excluded = run_cli_all(
        ("evaluate", stopped_run, "--data", test, "--device", "cpu"),
        ("evaluate", stopped_run, "--data", test, "--device", "cpu", "--exclude-training"),
        in_process=True)
    assert warned.returncode == 0, warned.stderr
    assert f"on {total} photos of {test}" in warned.stdout, warned.stdout
    assert f"warning: {seen} of the {total} photos of {test} are photos {stopped_run} was " \
           "trained on" in warned.stderr, warned.stderr
    assert f"{copies} of them as copies" in warned.stderr and "--exclude-training" in warned.stderr
    assert excluded.returncode == 0, excluded.stderr
    assert f"Left out {seen} of the {total} photos" in excluded.stdout, excluded.stdout
    assert f"on {total - seen} photos of {test}" in excluded.stdout, excluded.stdout

    only_training = tmp_path / "only training"
    (only_training / "red").mkdir(parents=True)
    for path in trained[:2]:
        shutil.copy(path, only_training / "red" / path.name)
    failed(run_cli("evaluate", stopped_run, "--data", only_training, "--device", "cpu",
                   "--exclude-training"), "none is left to evaluate")


@pytest.mark.parametrize("arguments", [
    {"data": 123}, {"report": 5}, {"tta": "yes"}, {"device": 5}, {"exclude_training": "no"},
    {"top_losses": True}, {"run": None}])
def test_the_api_names_an_argument_of_the_wrong_type(arguments, tmp_path):
    import clearclass
    from clearclass.errors import SettingError

    run = arguments.pop("run", tmp_path)
    name = next(iter(arguments), "run")
    with pytest.raises(SettingError, match=f"^{name} must be"):
        clearclass.evaluate(run, **arguments)


@pytest.mark.parametrize("function", ["resume", "clean"])
def test_the_other_readers_of_a_run_name_a_run_of_the_wrong_type(function):
    import clearclass
    from clearclass.errors import SettingError

    with pytest.raises(SettingError, match="^run must be a run folder"):
        getattr(clearclass, function)(None)
