"""SIGKILL at random moments: the run folder is always whole.

The swap itself (`fileio.FolderChange`, which every save of a run goes through) is killed
hundreds of times in a cheap forked child that does nothing but swap in new states of a
folder: after every kill the folder must read as one complete state, never a mix of two,
and never an older one than was read before.

Then a few real trainings of timm's tiny test_resnet, through the real command line with
--overwrite, are killed at a random moment once they have started writing: half of the kills
before the first epoch is saved, half after (a model is then saved every few tens of
milliseconds), as timed by a first run to the end. After every kill the run folder must read
as one complete state, the previous run or the new one, never a mix: config.json, split.csv,
metrics.csv and model/ from the same run, the weights matching model.json, the split the one
the config's seed gives. A last, uninterrupted run to the same folder must then work and
leave nothing behind.
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
from clearclass.training.checkpoint import read_checkpoint
from tests.conftest import REPO, make_dataset, run_cli
from tests.robustness import folder_swapper

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL") or not hasattr(os, "fork"),
                                reason="needs SIGKILL and fork")

SWAP_KILLS = 200
KILLS = 4  # real trainings killed: the swap they save through is killed hundreds of times
MAX_KILLS = 16  # when timing is off on a busy machine, a few more tries
EPOCHS = 4
RUN_ENTRIES = {"config.json", "split.csv", "skipped.csv", "metrics.csv", "model",
               "summary.json", "report", "checkpoint"}


# --- the swap alone, killed hundreds of times ------------------------------------------------

def _whole_state(target: Path) -> int:
    """Assert that `target` reads as one complete state; returns its generation (0: none)."""
    state = fileio.settled(target)
    if not state.exists():
        return 0
    generation = int((state / "part0.txt").read_text())
    found = {p.relative_to(state).as_posix() for p in state.rglob("*") if p.is_file()}
    assert found == folder_swapper.state_files(generation), (generation, sorted(found))
    for name in found:
        assert (state / name).read_text() == str(generation), name
    return generation


@pytest.mark.slow  # 200 kills of a swapping process
def test_sigkill_at_random_moments_of_folder_swaps_leaves_a_whole_folder(tmp_path):
    target = tmp_path / "runs" / "run"
    rng = random.Random(0)
    swapper = subprocess.Popen([sys.executable, "-m", "tests.robustness.folder_swapper",
                                str(target)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, cwd=REPO)
    seen = half_done = advanced = 0
    window = 0.01  # seconds: kills land up to this long after the swapping starts
    try:
        for kill in range(SWAP_KILLS):
            swapper.stdin.write(f"{kill} {rng.uniform(0.0, window):.4f}\n")
            swapper.stdin.flush()
            assert swapper.stdout.readline() == "killed\n", swapper.poll()
            half_done += any(p.name.startswith(".run.") for p in target.parent.iterdir())
            generation = _whole_state(target)
            assert generation >= seen  # a complete state is never lost, only replaced
            advanced += generation > seen
            # Aimed so that about half the kills come before the first swap is done, half
            # after, however slow this machine is now.
            window *= 0.9 if generation > seen else 1.1
            seen = generation
    finally:
        swapper.stdin.close()
        swapper.wait(timeout=60)
    print(f"{SWAP_KILLS} kills: {advanced} after a swap was done ({seen} states in all), "
          f"{half_done} left a swap half-done")  # shown with pytest -s
    # For the test to mean much, kills must have landed before a swap was done and after,
    # and in the middle of one, many times each.
    assert SWAP_KILLS // 4 < advanced < SWAP_KILLS * 3 // 4, advanced
    assert half_done > SWAP_KILLS // 10, half_done
    # An uninterrupted change afterwards finishes what was left and leaves nothing beside.
    with fileio.changing(target) as new:
        fileio.write_text(new / "notes.txt", "after")
    assert sorted(os.listdir(target.parent)) == ["run"]
    assert (target / "notes.txt").read_text() == "after"


# --- real trainings, killed a few times -------------------------------------------------------

def _train_command(data: Path, out: Path, seed: int) -> list[str]:
    return [sys.executable, "-m", "clearclass", "train", str(data), "--out", str(out),
            "--model", "test_resnet", "--no-pretrained", "--item-resize", "32",
            "--batch-size", "8", "--freeze-epochs", "1", "--epochs", str(EPOCHS),
            "--learning-rate", "1e-2", "--head-speedup", "1", "--workers", "0",
            "--device", "cpu", "--no-onnx", "--seed", str(seed), "--overwrite", "--quiet"]


def _watch(out: Path, process: subprocess.Popen, until: str,
           timeout: float = 300.0) -> float:
    """Poll until the run's staging folder appears ("start": the photos are found and
    split), a new state of the run folder is swapped in ("saved": an epoch is saved; each
    swap puts a new folder, a new inode, in place) or the process ends ("end"); returns
    the time it happened."""
    building = out.with_name(f".{out.name}.building")
    inode = _inode(out)
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if until == "start" and building.exists():
            break
        if until == "saved" and _inode(out) not in (None, inode):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"training never reached {until!r}")
        time.sleep(0.002)
    return time.monotonic()


def _inode(path: Path) -> int | None:
    """The folder's inode; None when there is none, as in the instant of a swap, between
    the previous state moved aside and the new one moved in (fileio.settled resolves it)."""
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


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
    saved = read_checkpoint(out)
    if saved is None:  # only a finished run has none
        assert len(rows) == 1 + EPOCHS
    else:  # the checkpoint of the last saved epoch's end, from the same run
        assert saved.run_id == config["run_id"]
        assert (saved.position.epochs_done, saved.position.step) == (len(rows), 0)
    settings = config["config"]
    expected = find_photos(data, settings["validation_fraction"], settings["seed"])
    with open(run / "split.csv", newline="") as f:
        split = {(r["path"], r["label"], r["is_valid"] == "True") for r in csv.DictReader(f)}
    assert split == {(str(p.path.resolve()), p.class_id, p.is_valid) for p in expected.photos}
    return config["run_id"]


@pytest.mark.slow  # a few real trainings, killed
def test_sigkill_at_random_moments_of_training_leaves_a_whole_run(tmp_path):
    data = make_dataset(tmp_path / "colours", per_class=12)
    out = tmp_path / "runs" / "colours"
    rng = random.Random(0)
    # One run to the end measures the two phases a kill may land in: before the first
    # epoch is saved (the previous run must stay) and after (each epoch swapped in whole).
    process = subprocess.Popen(_train_command(data, out, seed=1000),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = _watch(out, process, "start")
    saved = _watch(out, process, "saved")
    ended = _watch(out, process, "end")
    assert process.wait() == 0
    window = saved - started  # shrunk when a kill meant for before the save came after it
    kept = replaced = 0
    for attempt in range(MAX_KILLS):
        if kept >= KILLS // 2 and replaced >= KILLS // 2:
            break
        before = _check_whole(out, data)
        # The seed changes the split, so a mix of two runs' files would show.
        process = subprocess.Popen(_train_command(data, out, seed=attempt),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        early = kept < KILLS // 2 and (replaced >= KILLS // 2 or attempt % 2 == 0)
        if early:  # a random moment before the first save, as far as timing can aim it
            _watch(out, process, "start")
            time.sleep(rng.uniform(0.0, window))
        else:  # a random moment of the epochs after the first save
            _watch(out, process, "saved")
            time.sleep(rng.uniform(0.0, ended - saved))
        process.send_signal(signal.SIGKILL)
        process.wait()
        after = _check_whole(out, data)
        assert after is not None  # a complete run is never lost, only replaced by a newer one
        if after == before:
            kept += 1
        else:
            replaced += 1
            window *= 0.7 if early else 1.0
    print(f"{kept + replaced} kills: {kept} kept the previous run, {replaced} left the new run "
          f"in place (first save {saved - started:.2f} s after the start, end after "
          f"{ended - started:.2f} s)")  # shown with pytest -s
    # For the test to mean much, kills must have landed both before the new run's first save
    # (the previous run kept) and after it (the new run in place, mid-training).
    assert kept >= KILLS // 2 and replaced >= KILLS // 2

    # Then a run to the end over what the kills left, and its evaluation: the same commands,
    # in this process (what they find on disk is the point, not the process; the processes
    # above were the real ones, and were killed).
    finished = run_cli(*_train_command(data, out, seed=99)[3:])
    assert finished.returncode == 0, finished.stderr
    assert _check_whole(out, data) is not None
    assert sorted(p.name for p in out.parent.iterdir()) == ["colours"]  # nothing left beside
    evaluated = run_cli("evaluate", out, "--device", "cpu", "--quiet")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "Traceback" not in evaluated.stderr
