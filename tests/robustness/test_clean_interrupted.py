"""`clean --apply` and `--undo` stopped at every change they make to the file system, a move
between two file systems included: `--undo` always puts DATA back byte for byte, with no
temporary file left, and says what it does; through the real command line, Ctrl-C and
SIGTERM print what was applied and the `--undo` command, and exit 130.

A stop is injected at the k-th call that changes a file (rename, replace, unlink, mkdir,
rmdir, chmod, fsync, symlink, and half-way through a copy), for every k. "interrupt" raises
KeyboardInterrupt there, as a second Ctrl-C does (the code's own cleanup runs); "kill" also
puts DATA and RUN/clean back as they were at that instant, as a killed process leaves them
(no cleanup runs)."""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from clearclass import progress
from clearclass.cleaning import apply_actions, undo
from clearclass.errors import RunError
from tests.conftest import make_dataset, run_cli
from tests.test_cleaning import _labels_csv, _tree

# Two trainings, then each step of an apply and an undo stopped in turn, in both layouts.
pytestmark = pytest.mark.slow

# Calls that change the file system (looked up on these modules when they are made).
STEPS = {os: ("rename", "replace", "unlink", "mkdir", "rmdir", "chmod", "fsync", "symlink"),
         shutil: ("copyfileobj",)}


def _second_file_system(near: Path) -> Path | None:
    """A writable folder on another file system than `near` (a tmpfs), if there is one."""
    for candidate in ("/dev/shm", tempfile.gettempdir(), Path.home()):
        folder = Path(candidate)
        if folder.is_dir() and os.access(folder, os.W_OK) and \
                folder.stat().st_dev != near.stat().st_dev:
            return folder
    return None


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> SimpleNamespace:
    """Generated colour photos (DATA, on another file system than the runs when there is
    one) listed in labels.csv too, a run of test_resnet on the folder and one on the CSV
    (in a folder whose name has a space), and the actions each is given."""
    import clearclass

    top = tmp_path_factory.mktemp("interrupted")
    other = _second_file_system(top)
    parent = Path(tempfile.mkdtemp(prefix="clearclass-test-", dir=other)) if other else top
    try:
        data = make_dataset(parent / "colours")
        for photo, name in (("red/004.jpg", "rouge 004.jpg"), ("blue/005.jpg", "bleu.jpg")):
            (data / photo).rename((data / photo).with_name(name))  # free in the new class
        labels = _labels_csv(data)  # renames red/001.jpg to "red/001, copy.jpg"
        pristine = Path(shutil.copytree(data, top / "pristine", symlinks=True))
        folders = top / "runs and more"
        made = {}
        with progress.quiet():
            for name, source in (("folder", data), ("csv", labels)):
                made[name] = clearclass.train(
                    source, out=folders / name, model="test_resnet", pretrained=False,
                    item_resize=32, batch_size=8, epochs=0, freeze_epochs=1,
                    learning_rate=1e-2, head_speedup=1.0, workers=0, device="cpu",
                    onnx=False).run_dir
        # Two relabels (one a rename inside DATA, one an edit of labels.csv), two deletes
        # (moves into RUN/clean/removed/: across file systems).
        actions = {"folder": top / "folder-actions.csv", "csv": top / "csv-actions.csv"}
        actions["folder"].write_text(
            'path,action,new_label\nred/rouge 004.jpg,relabel,green\n"red/001, copy.jpg",delete,\n'
            "green/002.jpg,delete,\nblue/bleu.jpg,relabel,red\n", encoding="utf-8")
        actions["csv"].write_text(
            'path,action,new_label\nred/rouge 004.jpg,relabel,green\n"red/001, copy.jpg",delete,\n'
            "green/002.jpg,delete,\n", encoding="utf-8")
        yield SimpleNamespace(data=data, pristine=pristine, before=_tree(pristine),
                              run=made, actions=actions, crossing=other is not None)
    finally:
        if parent != top:
            shutil.rmtree(parent, ignore_errors=True)


def _reset(runs) -> None:
    """DATA as it was, and no apply logged (what a failed test left is gone)."""
    shutil.rmtree(runs.data)
    shutil.copytree(runs.pristine, runs.data, symlinks=True)
    for run in runs.run.values():
        shutil.rmtree(run / "clean", ignore_errors=True)


def _put_back(runs, layout: str) -> None:
    """`undo` (twice: the second finds nothing), then DATA is as it was and RUN/clean holds
    no trace of the apply."""
    run = runs.run[layout]
    with progress.quiet():
        undo(run)
        assert undo(run) == 0
    assert _tree(runs.data) == runs.before
    left = [p.relative_to(run) for p in (run / "clean").rglob("*")] \
        if (run / "clean").exists() else []
    assert not [p for p in left if p.name not in ("actions.csv", "index.html")], left


class Stop:
    """Counts the calls of STEPS and stops at call `at` (1-based); `names` lists them.

    Moves between DATA and anything else fail with EXDEV, as across two file systems,
    whether they are two or not. With `kill`, DATA and RUN/clean are copied aside at the
    instant of the stop, and `restore()` puts that state back."""

    def __init__(self, monkeypatch, runs, run: Path, at: int = 0, kill: bool = False,
                 simulate: bool = True):
        self.count, self.at, self.kill, self.busy = 0, at, kill, False
        self.simulate = simulate  # EXDEV between DATA and the rest
        self.names: list[str] = []  # of each step
        self.paths: list[str] = []  # the path each step was given first ("" if none)
        self.data, self.clean = runs.data, run / "clean"
        self.saved: Path | None = None
        self.data_root = os.path.realpath(runs.data) + os.sep
        for module, names in STEPS.items():
            for name in names:
                monkeypatch.setattr(module, name, self._wrap(name, getattr(module, name)))

    def _in_data(self, path) -> bool:
        return os.path.realpath(os.fsdecode(path)).startswith(self.data_root)

    def _wrap(self, name, real):
        def step(*args, **kwargs):
            if self.busy:
                return real(*args, **kwargs)
            if name == "rename" and self.simulate and \
                    self._in_data(args[0]) != self._in_data(args[1]):
                raise OSError(errno.EXDEV, "Invalid cross-device link (simulated)")
            self.count += 1
            self.names.append(name)
            self.paths.append(os.fsdecode(args[0]) if isinstance(args[0], str | Path) else "")
            if self.count == self.at:
                if name == "copyfileobj":  # half the photo is written, then the stop
                    whole = args[0].read()
                    args[1].write(whole[:len(whole) // 2])
                    args[1].flush()
                self._stop()
            return real(*args, **kwargs)

        return step

    def _stop(self):
        if self.kill:
            self.busy = True
            self.saved = Path(tempfile.mkdtemp(prefix="clearclass-stop-"))
            shutil.copytree(self.data, self.saved / "data", symlinks=True)
            if self.clean.exists():
                shutil.copytree(self.clean, self.saved / "clean", symlinks=True)
            self.busy = False
        raise KeyboardInterrupt

    def restore(self) -> None:
        """Back to the instant of the stop: what the cleanup after it did is undone."""
        if self.saved is None:
            return
        for folder, saved in ((self.data, self.saved / "data"), (self.clean, self.saved / "clean")):
            shutil.rmtree(folder, ignore_errors=True)
            if saved.exists():
                shutil.copytree(saved, folder, symlinks=True)
        shutil.rmtree(self.saved)


def _steps(monkeypatch, runs, layout: str, call, at: int = 0, **how) -> Stop:
    """`call()` with a stop at step `at` (0: none); the state it leaves."""
    with monkeypatch.context() as m:
        stop = Stop(m, runs, runs.run[layout], at=at, **how)
        try:
            with progress.quiet():
                call()
        except KeyboardInterrupt:
            assert at and stop.count >= at
        else:
            assert not at or stop.count < at, f"no stop at step {at} ({stop.count} steps)"
    stop.restore()
    return stop


def _apply(runs, layout: str):
    return lambda: apply_actions(runs.run[layout], runs.actions[layout])


def _undo(runs, layout: str):
    return lambda: undo(runs.run[layout])


@pytest.mark.parametrize("kill", [False, True], ids=["interrupt", "kill"])
@pytest.mark.parametrize("layout", ["folder", "csv"])
def test_an_apply_stopped_at_any_step_is_undone(runs, layout, kill, monkeypatch):
    _reset(runs)
    names = _steps(monkeypatch, runs, layout, _apply(runs, layout)).names
    _put_back(runs, layout)
    for k in range(1, len(names) + 1):
        _reset(runs)
        _steps(monkeypatch, runs, layout, _apply(runs, layout), at=k, kill=kill)
        if (runs.run[layout] / "clean" / "applied.json").exists():
            with pytest.raises(RunError, match="--undo"):  # the way out, not a refusal
                apply_actions(runs.run[layout], runs.actions[layout])
        try:
            _put_back(runs, layout)
        except (AssertionError, RunError) as e:
            raise AssertionError(f"stopped at step {k} ({names[k - 1]}): {e}") from e
    # Moves across file systems were stopped half-way through a copy too.
    assert "copyfileobj" in names and (layout == "folder" or "replace" in names), names


@pytest.mark.parametrize("kill", [False, True], ids=["interrupt", "kill"])
@pytest.mark.parametrize("layout", ["folder", "csv"])
def test_an_undo_stopped_at_any_step_is_finished_by_the_next(runs, layout, kill, monkeypatch):
    """From a complete apply and from one killed half-way through copying a photo."""
    _reset(runs)
    applying = _steps(monkeypatch, runs, layout, _apply(runs, layout)).names
    _put_back(runs, layout)
    for start in (0, "mid-copy"):
        if start == "mid-copy":
            start = applying.index("copyfileobj") + 1
        _reset(runs)
        _steps(monkeypatch, runs, layout, _apply(runs, layout), at=start, kill=True)
        names = _steps(monkeypatch, runs, layout, _undo(runs, layout)).names
        for k in range(1, len(names) + 1):
            _reset(runs)
            _steps(monkeypatch, runs, layout, _apply(runs, layout), at=start, kill=True)
            _steps(monkeypatch, runs, layout, _undo(runs, layout), at=k, kill=kill)
            if (runs.run[layout] / "clean" / "applied.json").exists():
                with pytest.raises(RunError, match="--undo"):
                    apply_actions(runs.run[layout], runs.actions[layout])
            try:
                _put_back(runs, layout)
            except (AssertionError, RunError) as e:
                raise AssertionError(f"apply stopped at {start}, undo at {k} "
                                     f"({names[k - 1]}): {e}") from e


def test_a_copy_that_differs_from_its_photo_is_never_deleted(runs, monkeypatch):
    """A move stopped between its copy and its delete leaves two files; when one of them was
    changed since, undo names both and deletes neither."""
    _reset(runs)
    run = runs.run["folder"]
    source = runs.data / "red" / "001, copy.jpg"
    paths = _steps(monkeypatch, runs, "folder", _apply(runs, "folder")).paths
    _put_back(runs, "folder")
    _reset(runs)
    # Stopped as the photo, copied across file systems, is deleted from DATA.
    deleting = paths.index(str(source)) + 1
    _steps(monkeypatch, runs, "folder", _apply(runs, "folder"), at=deleting, kill=True)
    copy = run / "clean" / "removed" / "red" / "001, copy.jpg"
    assert source.read_bytes() == copy.read_bytes()
    copy.write_bytes(b"edited since")
    with pytest.raises(RunError) as error:
        undo(run)
    message = str(error.value)
    assert len(message.splitlines()) == 1 and str(source) in message and str(copy) in message
    assert "differ" in message
    assert copy.read_bytes() == b"edited since" and source.is_file()
    copy.write_bytes(source.read_bytes())
    _put_back(runs, "folder")


def test_a_full_disk_half_way_says_how_to_undo(runs, monkeypatch):
    """An error that is not Ctrl-C (no space left while copying a photo across file
    systems) says what was applied and the --undo command too, and undo restores DATA."""
    from clearclass import cleaning

    _reset(runs)
    said, copy = [], shutil.copyfileobj

    def full(source, target, length=0):
        target.write(source.read(1000))
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(cleaning, "warn", said.append)
        m.setattr(shutil, "copyfileobj", full)
        Stop(m, runs, runs.run["folder"])  # never stops; the moves cross file systems
        with pytest.raises(OSError, match="No space left"):
            apply_actions(runs.run["folder"], runs.actions["folder"])
    assert shutil.copyfileobj is copy
    assert len(said) == 1 and "Apply failed: 1 of 4 moves made" in said[0], said
    assert f"clearclass clean {shlex.quote(str(runs.run['folder']))} --undo" in said[0]
    _put_back(runs, "folder")


def test_a_real_move_across_file_systems_stopped_mid_copy(runs, monkeypatch):
    """DATA on a tmpfs, the run on the disk: a photo half-copied into RUN/clean/removed/,
    then half-copied back by an undo, and each time undone."""
    if not runs.crossing:
        pytest.skip("no second file system (such as /dev/shm) to put DATA on")
    run = runs.run["folder"]
    assert (runs.data.stat().st_dev != run.stat().st_dev)
    _reset(runs)
    names = _steps(monkeypatch, runs, "folder", _apply(runs, "folder"), simulate=False).names
    _put_back(runs, "folder")
    assert "copyfileobj" in names, f"a move across file systems is not copied first: {names}"
    mid_copy = names.index("copyfileobj") + 1
    _reset(runs)
    _steps(monkeypatch, runs, "folder", _apply(runs, "folder"), at=mid_copy,
           simulate=False)
    source = runs.data / "red" / "001, copy.jpg"
    half = run / "clean" / "removed" / "red" / ".001, copy.jpg.moving.tmp"
    assert 0 < half.stat().st_size < source.stat().st_size  # a real half-written file
    assert not half.with_name("001, copy.jpg").exists()
    with pytest.raises(RunError, match=r"stopped before it finished \(1 of 4 moves made"):
        apply_actions(run, runs.actions["folder"])
    _put_back(runs, "folder")
    assert not half.exists()

    _reset(runs)
    with progress.quiet():
        apply_actions(run, runs.actions["folder"])
    names = _steps(monkeypatch, runs, "folder", _undo(runs, "folder"), simulate=False).names
    _reset(runs)
    with progress.quiet():
        apply_actions(run, runs.actions["folder"])
    _steps(monkeypatch, runs, "folder", _undo(runs, "folder"),
           at=names.index("copyfileobj") + 1, simulate=False)
    # Undo goes newest first: the last photo deleted is being copied back.
    whole = run / "clean" / "removed" / "green" / "002.jpg"
    assert list(runs.data.rglob(".*.moving.tmp")) == [runs.data / "green" / ".002.jpg.moving.tmp"]
    assert 0 < (runs.data / "green" / ".002.jpg.moving.tmp").stat().st_size < whole.stat().st_size
    with pytest.raises(RunError, match="undo .* was stopped before it finished"):
        apply_actions(run, runs.actions["folder"])
    _put_back(runs, "folder")


# The command, with its moves across file systems held up (test code, not clearclass's):
# moves out of DATA fail with EXDEV, as between two disks, and once the second photo is
# deleted from DATA (its move done), the command waits until the test has sent its signal.
HELD_CLEARCLASS = """
import errno, os, sys, time
data, ready, sent = os.path.realpath(sys.argv.pop(1)) + os.sep, sys.argv.pop(1), sys.argv.pop(1)
rename, unlink, deleted = os.rename, os.unlink, []
def in_data(path):
    return os.path.realpath(os.fsdecode(path)).startswith(data)
def crossing_rename(a, b, *args, **kwargs):
    if in_data(a) != in_data(b):
        raise OSError(errno.EXDEV, "Invalid cross-device link")
    return rename(a, b, *args, **kwargs)
def held_unlink(path, *args, **kwargs):
    unlink(path, *args, **kwargs)
    if in_data(path) and os.fsdecode(path).endswith(".jpg"):
        deleted.append(path)
        if len(deleted) == 2:
            open(ready, "w").close()
            deadline = time.monotonic() + 60
            while not os.path.exists(sent) and time.monotonic() < deadline:
                time.sleep(0.01)
os.rename, os.unlink = crossing_rename, held_unlink
sys.argv[0] = "clearclass"
from clearclass.cli import main
main()
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_during_apply_says_what_was_applied_and_how_to_undo(runs, sig, tmp_path):
    _reset(runs)
    run = runs.run["folder"]
    actions = tmp_path / "actions.csv"  # four deletes: four moves across file systems
    actions.write_text('path,action\nred/000.jpg,delete\n"red/001, copy.jpg",delete\n'
                       "green/002.jpg,delete\nblue/003.jpg,delete\n", encoding="utf-8")
    ready, sent = tmp_path / "two photos moved", tmp_path / "signal sent"
    child = subprocess.Popen([sys.executable, "-c", HELD_CLEARCLASS, runs.data, ready, sent,
                              "clean", run, "--apply", actions], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ready.exists(), child.communicate()
        child.send_signal(sig)
        sent.touch()
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130, (out, err)
    assert "Traceback" not in err, err
    undo_command = f"clearclass clean {shlex.quote(str(run))} --undo"
    assert "2 of 4 moves made" in err and undo_command in err, err
    assert _tree(runs.data) != runs.before

    again = run_cli("clean", run, "--apply", actions)
    listing = run_cli("clean", run, "--device", "cpu")
    for result in (again, listing):
        assert result.returncode == 1, result.stderr
        message = result.stderr.strip()
        assert len(message.splitlines()) == 1, message
        assert "stopped before it finished (2 of 4 moves made" in message, message
        assert undo_command in message, message

    result = run_cli("clean", run, "--undo")
    assert result.returncode == 0, result.stderr
    assert _tree(runs.data) == runs.before
    assert not (run / "clean" / "applied.json").exists()
