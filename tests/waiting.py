"""Polling helper shared by the tests that wait on real servers and threads."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(
    pred: Callable[[], object],
    timeout: float,
    what: str | Callable[[], str] = "the condition",
    step: float = 0.02,
) -> float:
    """Poll `pred` until it is truthy; return the seconds it took, or raise AssertionError
    naming `what` (a string, or a callable for a message built at failure time)."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            text = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g} s waiting for {text}")
        time.sleep(step)
    return time.monotonic() - t0
