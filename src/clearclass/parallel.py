"""How much work can run at once, and work spread over threads in order.

`available_cores` is the one place that counts cores: decoding workers, ONNX Runtime
threads and `verify` all follow it. `worker_context` is how every worker process is started.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.context import BaseContext
from typing import TypeVar

from clearclass.errors import SettingError

T = TypeVar("T")
R = TypeVar("R")
MAX_WORKERS = 8  # past this, decoding photos is limited by the disk, not the cores
START_METHODS = ("spawn", "fork", "forkserver")
START_METHOD_VARIABLE = "CLEARCLASS_START_METHOD"
# What a forkserver imports once for all its workers: the batch and decoding code, with
# PyTorch, NumPy and Pillow.
FORKSERVER_PRELOAD = ["clearclass.data.loader"]


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. under taskset or Slurm)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_workers() -> int:
    """Workers that decode or check photos: one per available core, at most 8."""
    return min(available_cores(), MAX_WORKERS)


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
