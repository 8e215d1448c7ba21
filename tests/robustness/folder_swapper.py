"""The cheap child of tests/robustness/test_kill.py: it swaps new states of a folder in
(`fileio.FolderChange`, as every save of a run does) in a grandchild it kills at a moment
the test chooses, hundreds of times, without the tens of milliseconds a fork of the test
process (which holds PyTorch) costs.

    python -m tests.robustness.folder_swapper TARGET

reads lines `SEED DELAY` on stdin; for each it forks a grandchild that swaps state after
state into TARGET, kills it with SIGKILL after DELAY seconds and answers `killed`, so that
the test can look at TARGET while nothing writes it. Only clearclass.fileio is imported.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from pathlib import Path

from clearclass import fileio

PARTS = [f"part{i}.txt" for i in range(6)] + ["sub/inner.txt"]


def state_files(generation: int) -> set[str]:
    """What state `generation` holds: the same parts always, and one that differs between
    consecutive states (a file left over from another state would show)."""
    return {*PARTS, f"extra{generation % 3}.txt"}


def swap_forever(target: Path, seed: int) -> None:
    """State after state, as a training run saves epoch after epoch, now and then a fresh
    one (start_empty, as a new run's first save); until killed."""
    rng = random.Random(seed)
    while True:
        change = fileio.FolderChange(target, start_empty=rng.random() < 0.2)
        generation = 1 + (int((target / "part0.txt").read_text()) if target.exists() else 0)
        for name in state_files(generation):
            fileio.write_text(change.path / name, str(generation))  # replaced, never edited
        (change.path / f"extra{(generation - 1) % 3}.txt").unlink(missing_ok=True)
        change.commit()


def main(target: Path) -> None:
    # A SIGKILL loses nothing already written (the page cache outlives the process): fsync
    # guards against a power cut, which this does not stage, and costs tens of milliseconds
    # a file on a busy disk. Without it a swap takes a few milliseconds, so that hundreds of
    # kills land at every step of it.
    os.fsync = lambda fd: None
    for line in sys.stdin:
        seed, delay = line.split()
        pid = os.fork()
        if pid == 0:
            try:
                swap_forever(target, int(seed))
            finally:
                os._exit(1)
        time.sleep(float(delay))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        print("killed", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
