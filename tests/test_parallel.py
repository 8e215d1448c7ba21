from __future__ import annotations

import threading
import time

from clearclass.parallel import map_in_order


def test_map_in_order_keeps_order_and_stays_close_to_the_consumer():
    drawn = []

    def items():
        for i in range(100):
            drawn.append(i)
            yield i

    def slow_for_small(i):
        time.sleep(0.02 if i < 3 else 0)
        return i * i

    results = []
    for item, result in map_in_order(slow_for_small, items(), workers=4):
        results.append((item, result))
        if len(results) == 6:
            break
    assert results == [(i, i * i) for i in range(6)]
    assert len(drawn) <= 6 + 4  # never more than `workers` ahead


def test_map_in_order_runs_in_parallel():
    barrier = threading.Barrier(3, timeout=2)  # fails unless three run at once
    out = list(map_in_order(lambda i: barrier.wait() is not None, range(3), workers=3))
    assert [item for item, _ in out] == [0, 1, 2]


def test_cores_follow_the_affinity_and_workers_stop_at_eight(monkeypatch):
    import os

    from clearclass import parallel

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(3)), raising=False)
    assert parallel.available_cores() == 3 and parallel.default_workers() == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert parallel.available_cores() == 64 and parallel.default_workers() == 8


def test_worker_context_follows_the_environment(monkeypatch):
    import multiprocessing

    import pytest

    from clearclass.errors import SettingError
    from clearclass.parallel import worker_context

    monkeypatch.delenv("CLEARCLASS_START_METHOD", raising=False)
    assert worker_context() is None  # the platform's default
    monkeypatch.setenv("CLEARCLASS_START_METHOD", "spawn")
    assert worker_context() is multiprocessing.get_context("spawn")
    monkeypatch.setenv("CLEARCLASS_START_METHOD", "forkserver")
    assert worker_context() is multiprocessing.get_context("forkserver")
    monkeypatch.setenv("CLEARCLASS_START_METHOD", "thread")
    with pytest.raises(SettingError) as caught:
        worker_context()
    assert caught.value.as_option().startswith(
        "CLEARCLASS_START_METHOD must be one of spawn, fork")
