"""Work spread over threads, in order (downloads, checks of local files)."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def map_in_order(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[tuple[T, R]]:
    """`(item, fn(item))` for each item, computed on `workers` threads, in the items' order.

    Example: `for url, data in map_in_order(client.fetch_bytes, urls, 8): ...`.
    Items are drawn lazily and at most `workers` ahead of the consumer, so one that stops
    early (it has enough photos) leaves little fetched for nothing. When drawing an item
    fails (a page of results that will not come), the items already drawn are still
    yielded, then the error is raised.
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
