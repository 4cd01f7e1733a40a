"""The retention worker trims periodically and survives a failing store."""

from __future__ import annotations

import time

import pytest

from memory.retention import RetentionWorker
from memory.store import MemoryUnavailable


class FakeStore:
    def __init__(self, results: list[int | Exception]) -> None:
        self.results = results
        self.calls = 0

    def trim(self, now: float | None = None) -> int:
        self.calls += 1
        result = self.results[min(self.calls - 1, len(self.results) - 1)]
        if isinstance(result, Exception):
            raise result
        return result


def test_run_once_counts_and_records_failures() -> None:
    store = FakeStore([3, MemoryUnavailable("down"), 2])
    worker = RetentionWorker(store, interval_s=60)  # type: ignore[arg-type]
    assert worker.run_once() == 3
    assert worker.run_once() == 0 and worker.failures == 1 and "down" in (worker.last_error or "")
    assert worker.run_once() == 2 and worker.last_error is None
    assert (worker.runs, worker.removed_total) == (3, 5)


def test_thread_ticks_until_stopped() -> None:
    store = FakeStore([MemoryUnavailable("down"), 1])
    worker = RetentionWorker(store, interval_s=0.02)  # type: ignore[arg-type]
    worker.start()
    deadline = time.monotonic() + 5
    while worker.removed_total < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.stop() is True
    assert worker.failures == 1 and worker.removed_total >= 3
    calls = store.calls
    time.sleep(0.05)
    assert store.calls == calls  # really stopped


def test_rejects_bad_interval() -> None:
    with pytest.raises(ValueError):
        RetentionWorker(FakeStore([0]), interval_s=0)  # type: ignore[arg-type]
