"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flashwatch.security import SECRETS


@pytest.fixture(scope="module")
def restore_global_secret_registry() -> Iterator[None]:
    """Property tests register hundreds of random secrets in the process-wide registry;
    drop them after the module so they cannot mask text in other test modules."""
    saved = dict(SECRETS._values)
    yield
    SECRETS.clear()
    for value, count in saved.items():
        for _ in range(count):
            SECRETS.register(value)
