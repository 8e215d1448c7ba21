"""Misusing `train` and `evaluate` through the real command line: one clear line, the
documented exit status (1), and nothing lost or left half-made."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import failed, make_dataset, run_cli, run_cli_all, tiny_options

# Each case checks a message, so the commands run in this process (tests/conftest.run_cli);
# one of each way of ending runs as a real process: an error (exit 1), a warning on stderr.
TINY = [*tiny_options(epochs=0), "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("robust") / "colours", per_class=6)


@pytest.mark.slow  # a real process that imports PyTorch
def test_out_naming_a_file_or_a_folder_of_other_things(data, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    file_out, folder_out = run_cli_all(
        ("train", data, "--out", notes, *TINY),
        ("train", data, "--out", tmp_path, "--overwrite", *TINY), in_process=True)
    explore_out = run_cli("explore", data, "--out", notes, "--quiet", in_process=False)
    failed(file_out, "--out names a file")
    failed(folder_out, "not a clearclass run folder")
    failed(explore_out, "--out names a file")
    assert notes.read_text() == "mine" and sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_a_run_that_fails_before_training_leaves_nothing(data, tmp_path):
    no_gpu, no_model = run_cli_all(
        ("train", data, "--out", tmp_path / "run", *TINY, "--device", "cuda"),
        ("train", data, "--out", tmp_path / "run2", *TINY, "--model", "nope"), in_process=True)
    failed(no_gpu, "--device cuda")
    failed(no_model)
    assert os.listdir(tmp_path) == []


def test_an_existing_model_needs_overwrite_and_a_half_made_run_does_not(data, trained_run,
                                                                        tmp_path):
    failed(run_cli("train", data, "--out", trained_run, *TINY), "--overwrite")
    # What an older clearclass or a killed first save leaves: settings, no model, a temp file.
    half = tmp_path / "half"
    shutil.copytree(trained_run, half)
    shutil.rmtree(half / "model")
    (half / ".model.json.x1y2.tmp").write_text("{")
    (tmp_path / ".half.building").mkdir()
    assert run_cli("train", data, "--out", half, *TINY).returncode == 0
    assert (half / "model" / "model.json").is_file()
    assert sorted(os.listdir(tmp_path)) == ["half"]
    assert not (half / ".model.json.x1y2.tmp").exists()


def test_a_run_being_swapped_when_a_process_died_still_evaluates(trained_run, tmp_path):
    # Killed between the two renames of a swap: RUN is missing, its new state beside it.
    parent = tmp_path / "runs"
    parent.mkdir()
    shutil.copytree(trained_run, parent / ".run.next")
    result = run_cli("evaluate", parent / "run", "--device", "cpu", "--quiet")
    assert result.returncode == 0 and "Accuracy" in result.stdout, result.stdout


def test_evaluate_on_what_is_not_a_run(data, trained_run, tmp_path):
    (tmp_path / "file").write_text("x")
    no_model = tmp_path / "no-model"
    shutil.copytree(trained_run, no_model)
    shutil.rmtree(no_model / "model")
    results = run_cli_all(("evaluate", tmp_path / "missing"), ("evaluate", data),
                          ("evaluate", tmp_path / "file"), ("evaluate", no_model),
                          ("evaluate", trained_run, "--top-losses", "-5"), in_process=True)
    for result, words in zip(results, ["not a training run"] * 3 + ["not a clearclass model",
                                                                     "--top-losses"]):
        failed(result, words)


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True,
                    reason="needs a user whom file permissions stop (not root) on POSIX")
def test_a_read_only_run_folder_is_a_one_line_error(trained_run, tmp_path):
    run = tmp_path / "read-only"
    shutil.copytree(trained_run, run)
    run.chmod(0o555)
    try:
        failed(run_cli("evaluate", run, "--device", "cpu"), "Permission denied")
    finally:
        run.chmod(0o755)


@pytest.mark.slow  # a real process that imports PyTorch
def test_an_unwritable_cache_falls_back_to_memory(data, tmp_path):
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("x")
    result = run_cli("train", data, "--out", tmp_path / "run", *TINY[:-1],
                     env={"CLEARCLASS_CACHE_DIR": str(blocker)}, in_process=False)
    assert result.returncode == 0, result.stderr
    assert "Cannot write the decoded-photo cache" in result.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["config"]["cache"] == "disk"  # as asked; decoded into memory


# --- --balance (issue 23) --------------------------------------------------------------------

def test_a_misspelt_balance_is_one_line_that_suggests_the_value(data, tmp_path):
    result = run_cli("train", data, "--out", tmp_path / "run", *TINY, "--balance", "wieghts")
    failed(result, "--balance must be one of none, weights, sampler", "'wieghts'",
           "Did you mean weights?")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["sideways", 3])
def test_a_config_json_edited_to_an_unknown_balance_is_one_line(trained_run, tmp_path, value):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    record = json.loads((run / "config.json").read_text())
    record["config"]["balance"] = value
    (run / "config.json").write_text(json.dumps(record))
    failed(run_cli("train", "--resume", run), "config.json is damaged", "balance must be")


def test_a_run_from_before_balance_resumes_as_none(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    record = json.loads((run / "config.json").read_text())
    del record["config"]["balance"]
    (run / "config.json").write_text(json.dumps(record))
    result = run_cli("train", "--resume", run)
    assert result.returncode == 0 and "nothing to resume" in result.stdout, result.said


@pytest.mark.slow  # trains twice
@pytest.mark.parametrize("balance", ["weights", "sampler"])
def test_a_class_with_a_single_training_photo_trains_under_balance(tmp_path, balance):
    """One green photo to learn from among 16 red ones: its weight is 17 / (2 x 1) = 8.5,
    or the sampler draws it in half the places of an epoch; training goes on, finite."""
    make_dataset(tmp_path / "photos", per_class=20, classes=("red", "green"))
    rows = ["path,label,is_valid"]
    for name, train, valid in (("red", range(16), range(16, 20)), ("green", [0], [1, 2])):
        rows += [f"photos/{name}/{i:03d}.jpg,{name},0" for i in train]
        rows += [f"photos/{name}/{i:03d}.jpg,{name},1" for i in valid]
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    result = run_cli("train", labels, "--out", out, *tiny_options(balance=balance), "--quiet")
    assert result.returncode == 0, result.said
    metrics = (out / "metrics.csv").read_text().splitlines()[1:]
    assert len(metrics) == 2 and "nan" not in " ".join(metrics) and "inf" not in " ".join(metrics)
