"""Shard function and leadership config: pure, no database (PostgreSQL locking is in
tests/integration/alerts/test_leadership.py)."""

from __future__ import annotations

from collections import Counter

import pytest
from pydantic import ValidationError

from alerts.leadership import LocalShards, shard_of
from flashwatch.config import AlertsConfig


def test_shard_of_is_pinned_across_processes_and_versions() -> None:
    # Pinned values: replicas of different builds/hosts must agree (Python's hash() would not).
    assert [shard_of(i, 8) for i in range(1, 11)] == [6, 4, 1, 6, 0, 4, 2, 2, 5, 4]
    assert shard_of(12345, 1024) == 673
    assert all(shard_of(i, 1) == 0 for i in range(100))


def test_shard_of_matches_the_ingest_split() -> None:
    # Same hash as ingest's replica split: one mental model for "which replica has a camera".
    from ingest.supervisor import replica_of

    assert all(shard_of(i, n) == replica_of(i, n) for i in range(1, 300) for n in (1, 2, 3, 7))


def test_shard_of_spreads_cameras_evenly() -> None:
    counts = Counter(shard_of(i, 8) for i in range(1, 8001))
    assert sorted(counts) == list(range(8))
    assert min(counts.values()) > 850 and max(counts.values()) < 1150  # 1000 each ± 15%


@pytest.mark.parametrize("shards", [0, -1])
def test_shard_of_rejects_no_shards(shards: int) -> None:
    with pytest.raises(ValueError, match="shards must be >= 1"):
        shard_of(1, shards)
    with pytest.raises(ValueError, match="shards must be >= 1"):
        LocalShards(shards)


def test_local_shards_own_everything() -> None:
    local = LocalShards(4)
    assert local.owned() == frozenset({0, 1, 2, 3})
    assert all(local.owns_camera(i) for i in range(50))
    with local.guard(7) as mine:
        assert mine


def test_config_defaults_and_bounds() -> None:
    cfg = AlertsConfig()
    assert (cfg.shards, cfg.leadership_poll_s) == (1, 2.0)
    assert AlertsConfig(shards=1024, leadership_poll_s=0.1).shards == 1024
    for bad in ({"shards": 0}, {"shards": 1025}, {"leadership_poll_s": 0.05},
                {"leadership_poll_s": 61}):  # fmt: skip
        with pytest.raises(ValidationError):
            AlertsConfig(**bad)
    for name in ("shards", "leadership_poll_s"):
        assert AlertsConfig.model_fields[name].description
