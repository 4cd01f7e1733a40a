"""The retention worker: calls `store.trim()` on a fixed period in a daemon thread.

Redis runs with `noeviction`, so nothing but this worker ever frees memory; it is also what
relieves `MemoryBackpressure` once old clips expire. A failed trim (Redis briefly down) is
counted and retried on the next tick instead of killing the thread. The composition root starts
one per process that owns retention (one is enough per store; more are harmless, just wasted).
"""

from __future__ import annotations

import logging
import threading

from memory.store import MemoryStore, MemoryStoreError

__all__ = ["RetentionWorker"]

log = logging.getLogger(__name__)


class RetentionWorker:
    """`start()` / `stop()`; counters for metrics: `runs`, `removed_total`, `failures`."""

    def __init__(self, store: MemoryStore, interval_s: float = 60.0) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.store = store
        self.interval_s = interval_s
        self.runs = 0
        self.removed_total = 0
        self.failures = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """One trim; returns entries removed (0 after a failure, which is recorded)."""
        self.runs += 1
        try:
            removed = self.store.trim()
        except MemoryStoreError as exc:
            self.failures += 1
            self.last_error = str(exc)
            log.warning(
                "memory retention: trim failed, retrying in %.0f s: %s", self.interval_s, exc
            )
            return 0
        self.removed_total += removed
        self.last_error = None
        return removed

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="memory-retention", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stops the loop; True when the thread ended within the timeout."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        thread.join(timeout_s)
        return not thread.is_alive()
