"""How much work can run at once, and work spread over threads in order.

`available_cores` is the one place that counts cores: decoding workers, ONNX Runtime
threads and `verify` all follow it. `worker_context` is how every worker process is started.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any, TypeVar

from clearclass.errors import SettingError

T = TypeVar("T")
R = TypeVar("R")
MAX_WORKERS = 8  # past this, decoding photos is limited by the disk, not the cores
START_METHODS = ("spawn", "fork", "forkserver")
START_METHOD_VARIABLE = "CLEARCLASS_START_METHOD"
CGROUP_ROOT = Path("/sys/fs/cgroup")  # where Linux mounts the cgroups
PROCESS_CGROUPS = Path("/proc/self/cgroup")  # the cgroups of this process
# What a forkserver imports once for all its workers: the batch and decoding code, with
# PyTorch, NumPy and Pillow.
FORKSERVER_PRELOAD = ["clearclass.data.loader"]


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity (taskset, Slurm, a container's
    cpuset), and no more than its cgroup's CPU quota (`docker --cpus`, Kubernetes limits)
    rounded up."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    quota = _cpu_quota()
    return max(1, min(cores, math.ceil(quota))) if quota else cores


def _cpu_quota() -> float | None:
    """The CPU time this process's cgroups allow, in cores (Linux; None when unlimited).

    The tightest of its cgroup and those above it, cgroup v2 (`cpu.max`: quota and period)
    or v1 (`cpu.cfs_quota_us` and `cpu.cfs_period_us`, -1 for none). In a container the
    cgroup file system shows the container's own cgroup at its root.
    """
    quotas = []
    for v2, folder in _cgroup_folders():
        try:
            if v2:
                quota, period = (folder / "cpu.max").read_text().split()[:2]
            else:
                quota = (folder / "cpu.cfs_quota_us").read_text().strip()
                period = (folder / "cpu.cfs_period_us").read_text().strip()
            if quota not in ("max", "-1") and int(period) > 0:
                quotas.append(int(quota) / int(period))
        except (OSError, ValueError):
            continue
    return min(quotas) if quotas else None


def _cgroup_folders() -> Iterator[tuple[bool, Path]]:
    """(is v2, folder) for this process's CPU cgroup and each above it, as mounted."""
    try:
        lines = PROCESS_CGROUPS.read_text().splitlines()
    except OSError:
        return
    for line in lines:
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            roots = [(True, CGROUP_ROOT)]
        elif "cpu" in controllers.split(","):
            roots = [(False, CGROUP_ROOT / name) for name in ("cpu", "cpu,cpuacct")]
        else:
            continue
        for v2, root in roots:
            folder = root / path.lstrip("/")
            if not folder.is_dir():  # a host path that the container does not show
                folder = root
            while True:
                yield v2, folder
                if folder == root:
                    break
                folder = folder.parent


def default_workers() -> int:
    """Workers that decode or check photos: one per available core, at most 8."""
    return min(available_cores(), MAX_WORKERS)


# Worker processes per core past which more only cost memory: decoding photos and running
# the network keep a core busy, so a fourth worker on a core waits three quarters of the
# time, while each holds a process of its own (a worker that imports PyTorch again, as
# spawn does on macOS and Windows: 510 MB measured; `--workers 64` on 2 cores would take
# the machine's memory before it decoded a photo).
PROCESSES_PER_CORE = 4


def check_process_count(setting: str, count: int | None, what: str) -> None:
    """SettingError when `count` processes (a `--workers` setting: None is the default)
    are more than this machine's cores can run (PROCESSES_PER_CORE per core); before any
    starts."""
    cores = available_cores()
    limit = PROCESSES_PER_CORE * cores
    if count is not None and count > limit:
        raise SettingError(setting, f"{count} asks for {count} {what}, but this machine has "
                                    f"{cores} CPU core{'s' * (cores != 1)} for this command "
                                    f"(its CPU affinity and quota), and past "
                                    f"{PROCESSES_PER_CORE} a core each process only adds its "
                                    f"memory; use at most {limit}, or leave it out for the "
                                    "default.")


def start_method() -> str:
    """How worker processes start here: `$CLEARCLASS_START_METHOD`, else the method this
    process set, else the platform's default (without fixing it, as asking Python would)."""
    method = _method_from_environment()
    return (method or multiprocessing.get_start_method(allow_none=True)
            or multiprocessing.get_all_start_methods()[0])


def worker_context() -> BaseContext | None:
    """How DataLoader worker processes start: `multiprocessing_context` for every DataLoader.

    None is the platform's default (fork on Linux before Python 3.14, spawn on macOS and
    Windows). `$CLEARCLASS_START_METHOD` (spawn, fork or forkserver) overrides it, so that
    the spawn path, which pickles everything it sends to the workers, is tested on Linux
    too. With forkserver (Linux's default from Python 3.14), the server imports what the
    workers need once, and each worker forked from it starts with PyTorch loaded.

    Example:
        context = worker_context()  # give it to DataLoader(multiprocessing_context=...)
        print(context.get_start_method() if context else "the platform's default")
    """
    method = _method_from_environment()
    if (method or start_method()) == "forkserver":
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(FORKSERVER_PRELOAD)
        return context
    return multiprocessing.get_context(method) if method else None


def _method_from_environment() -> str | None:
    method = os.environ.get(START_METHOD_VARIABLE, "").strip()
    if not method:
        return None
    if method not in START_METHODS or method not in multiprocessing.get_all_start_methods():
        usable = [m for m in START_METHODS if m in multiprocessing.get_all_start_methods()]
        # Named as the environment variable it is; the command line shows it unchanged.
        raise SettingError(START_METHOD_VARIABLE,
                           f"must be one of {', '.join(usable)} on this system; got "
                           f"{method!r}. Set it to one of those, or unset it to use the "
                           "platform's default.")
    return method


def ignore_interrupts(worker_id: int = 0) -> None:
    """`worker_init_fn` of every DataLoader: a worker leaves Ctrl-C to the main process.

    Ctrl-C in a terminal reaches every process of the group; a worker that died of it would
    break the epoch that the main process is stopping cleanly (saving a checkpoint first).
    The main process stops its workers itself. Module-level, so spawned workers can load it.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


class StopBetweenSteps:
    """Ctrl-C (SIGINT) and SIGTERM ask long work to stop between two of its steps (`asked`,
    `check`), where what it wrote agrees with itself; a second Ctrl-C stops at once
    (KeyboardInterrupt) unless `second_stops` is False. Training and `clean --apply/--undo`
    stop this way. Outside the main thread, where Python cannot catch signals, the default
    behaviour is kept."""

    SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None))
                    if s is not None)

    def __init__(self, second_stops: bool = True) -> None:
        self.asked, self.second_stops = False, second_stops
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> StopBetweenSteps:
        with contextlib.suppress(ValueError):  # not the main thread
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._ask)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            if handler is not None:  # None: a handler not set from Python, left as it is
                signal.signal(sig, handler)

    def _ask(self, signum: int, frame: Any) -> None:
        if self.asked:
            if signum == signal.SIGINT and self.second_stops:
                raise KeyboardInterrupt
            return
        self.asked = True
        self.first_asked()

    def first_asked(self) -> None:
        """Called on the first request, in the signal handler: say what will happen."""

    def check(self) -> None:
        """Between two steps: KeyboardInterrupt if a stop was asked for."""
        if self.asked:
            raise KeyboardInterrupt


def map_in_order(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[tuple[T, R]]:
    """`(item, fn(item))` for each item, computed on `workers` threads, in the items' order.

    Downloads use it as `for url, data in map_in_order(client.fetch_bytes, urls, 8): ...`.
    Items are drawn lazily and at most `workers` ahead of the consumer, so one that stops
    early (it has enough photos) leaves little fetched for nothing. When drawing an item
    fails (a page of results that will not come), the items already drawn are still
    yielded, then the error is raised.

    Example:
        print(list(map_in_order(len, ["beagle", "pug"], workers=2)))  # [('beagle', 6), ('pug', 3)]
    """
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    source = iter(items)
    pending: deque = deque()
    failure: list[BaseException] = []

    def draw(n: int) -> None:
        if failure:
            return
        try:
            for item in itertools.islice(source, n):
                pending.append((item, pool.submit(fn, item)))
        except Exception as e:
            failure.append(e)

    try:
        draw(max(1, workers))
        while pending:
            item, future = pending.popleft()
            result = future.result()
            draw(1)
            yield item, result
        if failure:
            raise failure[0]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
