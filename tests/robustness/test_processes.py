"""`train --processes N` and `train --resume RUN` misused through the real command line:
what this machine cannot run is refused in one line with the numbers before any process
starts; the processes end with the command, however it is stopped; an error they meet is
printed once; a setting given with --resume is refused or honoured, never dropped.

The processes are counted by CPU affinity (`taskset`'s way, which `available_cores`
follows), so no case ever starts more than two training processes, even if a refusal broke.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from clearclass.errors import SettingError
from clearclass.parallel import available_cores
from tests.conftest import failed, make_dataset, run_cli, run_cli_all, tiny_options

linux = pytest.mark.skipif(not sys.platform.startswith("linux"),
                           reason="CPU affinity, /proc and PR_SET_PDEATHSIG are Linux's")
two_cores = pytest.mark.skipif(not sys.platform.startswith("linux") or available_cores() < 2,
                               reason="needs two cores for two training processes")
REFUSED_WITHIN = 15  # seconds: Python and clearclass start, no PyTorch, no process
# What runs on chosen cores runs as a real process; the other refusals run in this one.
TINY = [*tiny_options(epochs=0), "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("processes") / "colours", per_class=6)


@pytest.fixture(scope="module")
def finished_run(data) -> Path:
    """A finished run of one process, with a batch size (5) that 2 processes cannot share."""
    out = data.parent / "runs" / "done"
    assert run_cli("train", data, "--out", out, *TINY, "--batch-size", "5").returncode == 0
    return out


def _on_cores(cores: int, *args) -> tuple[subprocess.CompletedProcess, float]:
    """`clearclass ARGS` allowed on the first `cores` cores only; the result and its time."""
    first = sorted(os.sched_getaffinity(0))[:cores]
    started = time.monotonic()
    with _on(first):
        result = run_cli(*args, in_process=False)
    return result, time.monotonic() - started


@contextlib.contextmanager
def _on(cores: list[int]):
    """This process (and so the processes it starts) on `cores` only, for a while."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _refused_at_once(result: subprocess.CompletedProcess, seconds: float, *words: str) -> None:
    failed(result, *words)
    assert "torchrun" not in result.stdout + result.stderr  # nothing was started
    assert seconds < REFUSED_WITHIN, seconds


@linux
def test_more_processes_than_cores_is_refused_before_any_starts(data, tmp_path):
    result, seconds = _on_cores(1, "train", data, "--out", tmp_path / "run", *TINY,
                                "--batch-size", "8", "--processes", "2")
    _refused_at_once(result, seconds, "--processes 2 asks for 2 processes",
                     "1 CPU core ", "--processes 1")
    assert not (tmp_path / "run").exists()


def test_the_limits_name_their_numbers(monkeypatch):
    """64 processes (checked here without the command line, which would start them if the
    check broke), a memory that cannot hold them, a GPU count."""
    from clearclass.training import launch

    cores = available_cores()
    many = max(64, cores + 1)
    with pytest.raises(SettingError) as refusal:
        launch.check(many, "cpu", many)
    assert refusal.value.as_option().startswith(
        f"--processes {many} asks for {many} processes, but this machine has {cores} CPU core")

    monkeypatch.setattr(launch, "available_cores", lambda: 64)
    import clearclass.data.budget as budget

    monkeypatch.setattr(budget, "available_memory", lambda: 2 * 10**9)
    with pytest.raises(SettingError, match=r"8 needs at least 2.8 GB of memory .* 2.0 GB is "
                                           r"available now; use at most --processes 5"):
        launch.check(8, "cpu", 64)

    import torch

    import clearclass.device as device

    monkeypatch.setattr(device, "device_name", lambda name: name)  # as if CUDA were there
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(SettingError, match="4 processes, but PyTorch sees 2 CUDA GPUs"):
        launch.check(4, "cuda", 64)
    with pytest.raises(SettingError, match="cuda:1 names one GPU"):
        launch.check(2, "cuda:1", 64)
    launch.check(2, "cuda", 64)


@two_cores
def test_a_batch_that_does_not_divide_among_the_processes_is_refused_before_any_starts(
        data, tmp_path):
    result, seconds = _on_cores(2, "train", data, "--out", tmp_path / "run", *TINY,
                                "--batch-size", "7", "--processes", "2")
    _refused_at_once(result, seconds, "--batch-size", "all 2 processes", "got 7",
                     "--processes 1")


@two_cores
def test_a_resumed_runs_batch_is_checked_from_its_config(finished_run):
    result, seconds = _on_cores(2, "train", "--resume", finished_run, "--processes", "2")
    _refused_at_once(result, seconds, "--processes 2: the run's batch size (5, in "
                     f"{finished_run / 'config.json'}", "--processes 1")


def test_a_setting_given_with_resume_is_refused_even_at_its_default(finished_run):
    """--epochs 1 is the default: it used to be dropped without a word."""
    before = (finished_run / "config.json").read_bytes()
    alone, with_processes = run_cli_all(
        ("train", "--resume", finished_run, "--epochs", "1"),
        ("train", "--resume", finished_run, "--epochs", "1", "--seed", "42", "--processes",
         "2"), in_process=True)
    failed(alone, "--epochs cannot change when resuming", "start a new run",
           f"--weights {finished_run / 'model' / 'model.safetensors'}")
    failed(with_processes, "--seed and --epochs cannot change")
    assert "torchrun" not in with_processes.stdout + with_processes.stderr
    assert (finished_run / "config.json").read_bytes() == before

    from clearclass import resume
    from clearclass.errors import RunError

    with pytest.raises(RunError, match="epochs cannot change"):
        resume(finished_run, epochs=1)


def test_a_setting_resume_may_change_is_honoured_even_at_its_default(finished_run, tmp_path):
    """--onnx is the default, and the run was trained with --no-onnx: resuming the finished
    run with --onnx exports its model."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    assert not (run / "model" / "model.onnx").exists()
    result = run_cli("train", "--resume", run, "--onnx", "--workers", "0", "--device", "cpu",
                     "--quiet")
    assert result.returncode == 0, result.stderr
    assert (run / "model" / "model.onnx").is_file()


def test_a_resumed_runs_damaged_config_is_one_line(finished_run, tmp_path):
    """Readable JSON that is not a run's settings: one line that names the file (and the
    launcher's cheap look at it for --processes lets the processes say it, once)."""
    runs = []
    for name, config in [("not-a-dict", {"config": 5}), ("no-data", {"config": {"seed": 1}}),
                         ("wrong-kind", {"config": {"data": "x", "batch_size": "8"}})]:
        run = tmp_path / name
        shutil.copytree(finished_run, run)
        (run / "config.json").write_text(json.dumps(config))
        runs.append(("train", "--resume", run))
    for result in run_cli_all(*runs, in_process=True):
        failed(result, "config.json is damaged", "cannot be resumed")


@pytest.mark.slow  # real processes that import PyTorch
@two_cores
def test_an_error_in_every_process_is_printed_once(tmp_path):
    result, _ = _on_cores(2, "train", tmp_path / "missing", "--out", tmp_path / "run", *TINY,
                          "--processes", "2")
    failed(result, "missing does not exist")  # one line, no torchrun traceback


def test_the_processes_get_exactly_the_settings_given(monkeypatch, data):
    """Those typed, at their defaults too (--epochs 1), under their current names (an old
    name, an old switch), and nothing else."""
    from typer.testing import CliRunner

    from clearclass.cli import app
    from clearclass.training import launch

    started = []
    monkeypatch.setattr(launch, "check", lambda *args: None)
    monkeypatch.setattr(launch, "run", lambda n, args, debug: started.append(args) or 0)
    result = CliRunner().invoke(app, ["train", str(data), "--processes", "2", "--epochs", "1",
                                      "--base-lr", "0.01", "--no-cache", "--no-onnx", "-q"])
    assert result.exit_code == 0, result.output
    assert started == [["train", str(data), "--cache", "memory", "--epochs", "1",
                        "--learning-rate", "0.01", "--no-onnx", "--quiet"]]


def _descendants(pid: int) -> set[int]:
    """The processes below `pid` now, from /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # ended meanwhile
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow  # real processes that import PyTorch
@two_cores
@pytest.mark.parametrize("stop", ["SIGTERM", "SIGKILL"])
def test_the_processes_end_with_the_command(data, tmp_path, stop):
    """SIGTERM (as `kill` or a scheduler sends it) is passed on: the processes save a
    checkpoint and stop. SIGKILL cannot be passed on: the kernel ends them with it."""
    out = tmp_path / "run"
    tiny = [a for a in TINY if a != "--quiet"]
    first = sorted(os.sched_getaffinity(0))[:2]
    launcher = subprocess.Popen(
        [sys.executable, "-m", "clearclass", "train", str(data), "--out", str(out), *tiny,
         "--epochs", "300", "--processes", "2"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, preexec_fn=lambda: os.sched_setaffinity(0, first))
    training = threading.Event()

    def watch() -> None:
        for line in launcher.stdout:
            if line.startswith("0 "):  # the first epoch's row: both processes train
                training.set()
        training.set()

    threading.Thread(target=watch, daemon=True).start()
    processes: set[int] = set()
    try:
        assert training.wait(240) and launcher.poll() is None, launcher.stderr.read()
        processes = _descendants(launcher.pid)
        assert len(processes) >= 2, processes
        launcher.send_signal(getattr(signal, stop))
        launcher.wait(120)
        deadline = time.monotonic() + 10
        while any(map(_running, processes)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in processes if _running(pid)], "left running"
        if stop == "SIGTERM":
            stderr = launcher.stderr.read()
            assert launcher.returncode == 128 + signal.SIGTERM, stderr
            assert f"clearclass train --resume {out}" in stderr and "Traceback" not in stderr
            state = json.loads((out / "checkpoint" / "state.json").read_text())
            assert state, "a checkpoint is saved"
    finally:  # what a failure left: ended here, not left to use the machine
        for pid in [launcher.pid, *processes]:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        launcher.wait()


@linux
def test_cores_follow_the_cgroup_quota(monkeypatch, tmp_path):
    """`docker --cpus 1.5` sets a quota of 1.5 cores (cgroup v2: cpu.max; v1:
    cpu.cfs_quota_us), which the CPU affinity does not show: 2 cores at most, the tightest
    of the cgroup and those above it."""
    from clearclass import parallel

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setattr(parallel, "CGROUP_ROOT", tmp_path / "cgroup")
    monkeypatch.setattr(parallel, "PROCESS_CGROUPS", tmp_path / "cgroup-of-this-process")
    own = tmp_path / "cgroup" / "job" / "step"
    own.mkdir(parents=True)
    (tmp_path / "cgroup-of-this-process").write_text("0::/job/step\n")
    assert parallel.available_cores() == 64  # no quota anywhere
    (own / "cpu.max").write_text("max 100000\n")
    (own.parent / "cpu.max").write_text("150000 100000\n")
    assert parallel.available_cores() == 2

    v1 = tmp_path / "cgroup" / "cpu,cpuacct"
    v1.mkdir()
    (tmp_path / "cgroup-of-this-process").write_text("4:cpu,cpuacct:/docker/abc\n1:name=x:/\n")
    (v1 / "cpu.cfs_quota_us").write_text("400000\n")  # the container's own, at the root
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert parallel.available_cores() == 4
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert parallel.available_cores() == 64


@pytest.mark.slow  # real processes that import PyTorch
@linux
def test_more_workers_than_the_cores_can_run_is_refused_before_any_starts(data, tmp_path):
    """--workers of train, explore and serve: the same class of count as --processes (on
    one core, at most 4; each refused before a worker starts, in one line)."""
    model = tmp_path / "no-model-needed"  # serve refuses before it reads the model
    for args in (("train", data, "--out", tmp_path / "run", *TINY, "--workers", "5"),
                 ("explore", data, "--out", tmp_path / "explore", "--workers", "5"),
                 ("serve", model, "--workers", "5")):
        result, seconds = _on_cores(1, *args)
        failed(result, "--workers 5 asks for 5", "1 CPU core ", "at most 4")
        assert seconds < 60, seconds
    assert not (tmp_path / "run").exists()
