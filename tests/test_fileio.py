"""Files and folders that change as a unit, whatever moment the process dies."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clearclass import fileio


def _fill(folder: Path, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def _read(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir()) if p.is_file()}


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name != folder.name)


def test_written_files_get_the_mode_the_umask_gives():
    mask = os.umask(0o022)
    os.umask(mask)
    expected = 0o666 & ~mask
    assert expected == fileio.FILE_MODE


def test_atomic_write_is_readable_by_others_under_the_usual_umask(tmp_path):
    path = fileio.write_text(tmp_path / "a.txt", "x")
    if fileio.FILE_MODE & 0o044:  # the umask lets group and others read
        assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044


def test_a_change_replaces_the_folder_whole(tmp_path):
    target = _fill(tmp_path / "run", a="old", b="kept")
    with fileio.changing(target) as new:
        assert _read(new) == {"a": "old", "b": "kept"}  # starts as a copy
        assert _read(target) == {"a": "old", "b": "kept"}  # unchanged until committed
        fileio.write_text(new / "a", "new")
    assert _read(target) == {"a": "new", "b": "kept"}
    assert _siblings(target) == []


def test_unchanged_files_are_shared_and_never_changed_through_the_copy(tmp_path):
    target = _fill(tmp_path / "run", a="old")
    change = fileio.FolderChange(target)
    fileio.write_text(change.path / "a", "new")
    assert (target / "a").read_text() == "old"
    change.discard()
    assert _read(target) == {"a": "old"} and _siblings(target) == []


def test_an_error_inside_a_change_leaves_the_folder_as_it_was(tmp_path):
    target = _fill(tmp_path / "run", a="old")
    with pytest.raises(KeyboardInterrupt), fileio.changing(target, start_empty=True) as new:
        fileio.write_text(new / "b", "half")
        raise KeyboardInterrupt
    assert _read(target) == {"a": "old"} and _siblings(target) == []


def test_a_first_change_creates_the_folder(tmp_path):
    target = tmp_path / "runs" / "new"
    with fileio.changing(target) as new:
        fileio.write_text(new / "a", "1")
    assert _read(target) == {"a": "1"}


# Each state a killed FolderChange.commit can leave: (folders present) -> what readers see
# and what the next writer ends with.
@pytest.mark.parametrize(("present", "readers_see", "finished"), [
    (("run", ".run.building"), "old", "old"),  # killed while writing the new state
    (("run", ".run.next"), "old", "new"),  # new state complete, not yet swapped in
    ((".run.previous", ".run.next"), "new", "new"),  # between the two renames
    (("run", ".run.previous"), "new", "new"),  # swapped, old state not yet deleted
])
def test_every_half_done_change_reads_whole_and_is_finished(tmp_path, present, readers_see,
                                                              finished):
    states = {"run": "old", ".run.building": "half", ".run.next": "new",
              ".run.previous": "old"}
    if present == ("run", ".run.previous"):
        states["run"] = "new"
    for name in present:
        _fill(tmp_path / name, model=states[name])
    target = tmp_path / "run"
    assert (fileio.settled(target) / "model").read_text() == readers_see
    assert fileio.settled(target / "model").read_text() == readers_see
    fileio.finish_interrupted_change(target)
    assert _read(target) == {"model": finished}
    assert _siblings(target) == []


def test_settled_finds_a_file_below_a_folder_being_swapped(tmp_path):
    _fill(tmp_path / ".run.next" / "model", weights="w")
    assert fileio.settled(tmp_path / "run" / "model" / "weights").read_text() == "w"
    assert fileio.settled(tmp_path / "other") == tmp_path / "other"


def test_one_writer_at_a_time(tmp_path):
    from clearclass.errors import RunError

    with fileio.exclusive(tmp_path / "run"), pytest.raises(
            RunError, match="Another clearclass process is writing"), \
            fileio.exclusive(tmp_path / "run"):
        pass
    with fileio.exclusive(tmp_path / "run"):  # released, even after the error
        pass
    assert os.listdir(tmp_path) == []


_HOLD = """
import sys, time
from clearclass import fileio
from clearclass.errors import RunError
try:
    with fileio.exclusive(sys.argv[1]):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
except RunError as e:
    print(e, flush=True)
"""


def _holder(folder: Path, seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _HOLD, str(folder), str(seconds)],
                            stdout=subprocess.PIPE, text=True)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_second_process_is_refused_at_once_and_a_killed_one_holds_nothing(tmp_path):
    folder = tmp_path / "run"
    first = _holder(folder, 60)
    try:
        assert first.stdout.readline().strip() == "held"
        started = time.monotonic()
        second = _holder(folder, 0)
        out, _ = second.communicate(timeout=60)
        assert out.strip() == (f"Another clearclass process is writing {folder}; wait for it "
                               "to finish, or choose another --out.")
        assert time.monotonic() - started < 30, "refused without waiting for the lock"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert (tmp_path / ".run.lock").exists(), "left by the killed process"
    third = _holder(folder, 0)
    assert third.communicate(timeout=60)[0].strip() == "held"
    assert os.listdir(tmp_path) == [], "removed by the process that finished"


def test_a_copy_leaves_out_other_writers_work_in_progress(tmp_path):
    target = _fill(tmp_path / "run", a="1")
    _fill(target / ".report.building", half="x")
    (target / ".metrics.csv.abc.tmp").write_text("x")
    change = fileio.FolderChange(target)
    assert sorted(os.listdir(change.path)) == ["a"]
    change.discard()


def test_foreign_entries_names_what_a_whole_replacement_would_take_away(tmp_path):
    folder = _fill(tmp_path / "report", **{"index.html": "x", "mine.txt": "y", "a.csv": "z"})
    assert fileio.foreign_entries(folder, ("index.html",)) == ["a.csv", "mine.txt"]
    assert fileio.foreign_entries(tmp_path / "missing", ("index.html",)) == []
