"""How much work can run at once, and work spread over threads in order.

`available_cores` is the one place that counts cores: decoding workers, ONNX Runtime
threads and `verify` all follow it.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
MAX_WORKERS = 8  # past this, decoding photos is limited by the disk, not the cores


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. under taskset or Slurm)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_workers() -> int:
    """Workers that decode or check photos: one per available core, at most 8."""
    return min(available_cores(), MAX_WORKERS)


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
