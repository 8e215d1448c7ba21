"""SIGKILL at random moments of a short training: the run folder is always whole.

Each run trains timm's tiny test_resnet for many short epochs through the real command
line and is killed at a random moment once it has started writing (about 1 s of
training, where a model is saved every few tens of milliseconds). After every kill the run
folder must read as one complete state, the previous run or the new one, never a mix:
config.json, split.csv, metrics.csv and model/ from the same run, the weights matching
model.json, the split the one the config's seed gives. A last, uninterrupted run to the
same folder must then work and leave nothing behind.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clearclass import bundle, fileio
from clearclass.data.sources import find_photos
from tests.conftest import make_dataset

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

KILLS = 20
EPOCHS = 12
RUN_ENTRIES = {"config.json", "split.csv", "skipped.csv", "metrics.csv", "model",
               "summary.json", "report"}


def _train_command(data: Path, out: Path, seed: int) -> list[str]:
    return [sys.executable, "-m", "clearclass", "train", str(data), "--out", str(out),
            "--model", "test_resnet", "--no-pretrained", "--item-resize", "32",
            "--batch-size", "8", "--freeze-epochs", "1", "--epochs", str(EPOCHS),
            "--learning-rate", "1e-2", "--head-speedup", "1", "--workers", "0",
            "--device", "cpu", "--no-onnx", "--seed", str(seed), "--overwrite", "--quiet"]


def _wait_for_start(out: Path, process: subprocess.Popen, timeout: float = 120.0) -> None:
    """Until the run's staging folder appears (the process has found and split the photos)."""
    building = out.with_name(f".{out.name}.building")
    deadline = time.monotonic() + timeout
    while not building.exists() and process.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError("training never started writing")
        time.sleep(0.002)


def _check_whole(out: Path, data: Path) -> str | None:
    """Assert that the run folder is one complete state; returns its run id (None: no run)."""
    run = fileio.settled(out)
    if not run.exists():
        return None
    assert set(os.listdir(run)) <= RUN_ENTRIES, os.listdir(run)
    config = json.loads((run / "config.json").read_text())
    info = bundle.read_info(run / "model")
    model_json = json.loads((run / "model" / "model.json").read_text())
    assert bundle.sha256(run / "model" / "model.safetensors") == model_json["weights"]["sha256"]
    assert set(os.listdir(run / "model")) <= set(bundle.BUNDLE_FILES)
    assert info.training["run_id"] == config["run_id"]
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == info.training["epochs_done"]
    settings = config["config"]
    expected = find_photos(data, settings["validation_fraction"], settings["seed"])
    with open(run / "split.csv", newline="") as f:
        split = {(r["path"], r["label"], r["is_valid"] == "True") for r in csv.DictReader(f)}
    assert split == {(str(p.path.resolve()), p.label, p.is_valid) for p in expected.photos}
    return config["run_id"]


def test_sigkill_at_random_moments_leaves_a_whole_run(tmp_path):
    data = make_dataset(tmp_path / "colours", per_class=12)
    out = tmp_path / "runs" / "colours"
    rng = random.Random(0)
    seen: list[str | None] = []
    for attempt in range(KILLS):
        before = _check_whole(out, data)
        # The seed changes the split, so a mix of two runs' files would show.
        process = subprocess.Popen(_train_command(data, out, seed=attempt),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait_for_start(out, process)
        time.sleep(rng.uniform(0.0, 1.2))
        process.send_signal(signal.SIGKILL)
        process.wait()
        after = _check_whole(out, data)
        if before is not None:  # a complete run is never lost, only replaced by a newer one
            assert after is not None
        seen.append(after)
    # For the test to mean much, kills must have landed both before the new run's first save
    # (the previous run kept) and after it (the new run in place, mid-training).
    kept = sum(a == b and a is not None for a, b in zip(seen[1:], seen[:-1]))
    replaced = sum(a != b and a is not None for a, b in zip(seen[1:], seen[:-1]))
    print(f"{KILLS} kills: {seen.count(None)} before any run existed, {kept} kept the previous "
          f"run, {replaced} left the new run in place")  # shown with pytest -s
    assert kept >= 2 and replaced >= 2, seen

    finished = subprocess.run(_train_command(data, out, seed=99), capture_output=True,
                              text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert _check_whole(out, data) is not None
    assert sorted(p.name for p in out.parent.iterdir()) == ["colours"]  # nothing left beside
    evaluated = subprocess.run([sys.executable, "-m", "clearclass", "evaluate", str(out),
                                "--device", "cpu", "--quiet"],
                               capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "Traceback" not in evaluated.stderr
