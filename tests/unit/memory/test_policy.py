"""Pure parts of memory: retention policy with a fake clock, stats folding, Redis value layout."""

from __future__ import annotations

import math

import pytest

from flashwatch.config import MemoryConfig
from memory import layout as L
from memory.store import (
    bound_ms,
    covered_seconds,
    key_ms,
    retention_horizon,
    retention_horizon_ms,
    retention_hours_for,
    summarise_stats,
)
from memory.testing import make_clip

HOURS = [6.0, 48.0, 168.0]


def test_default_retention_matches_issue() -> None:
    assert MemoryConfig().retention_hours == HOURS
    assert [retention_hours_for(lvl, HOURS) for lvl in range(5)] == [6, 48, 168, 168, 168]


@pytest.mark.parametrize(("level", "hours"), [(0, 6.0), (1, 48.0), (2, 168.0), (7, 168.0)])
def test_horizon_is_now_minus_level_retention(level: int, hours: float) -> None:
    now = 1_700_000_000.0
    assert retention_horizon(level, HOURS, now) == now - hours * 3600
    assert retention_horizon_ms(level, HOURS, now) == key_ms(now - hours * 3600)


def test_horizon_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        retention_hours_for(-1, HOURS)
    with pytest.raises(ValueError):
        retention_hours_for(0, [])


def test_key_ms_rounds_like_clip_key() -> None:
    assert key_ms(1.0004) == 1000 and key_ms(1.0006) == 1001
    assert make_clip(1, 0, 12.3456, tokens=2, channels=4).clip_id == (1, 0, 12346)


def test_bound_ms_accepts_infinities() -> None:
    assert bound_ms(1.5) == 1500
    assert bound_ms(math.inf) == 2**53 and bound_ms(-math.inf) == -(2**53)
    with pytest.raises(ValueError):
        bound_ms(math.nan)


def test_covered_seconds_counts_each_stride() -> None:
    assert covered_seconds(0.0, 3596.0, 900) == pytest.approx(3600.0)  # 1 h of level 0
    assert covered_seconds(0.0, 3584.0, 225) == pytest.approx(3600.0)  # 1 h of level 1
    assert covered_seconds(5.0, 5.0, 1) == 0.0


def test_summarise_stats_per_level() -> None:
    rows = [(1, 0, 900, 900 * 100, 0.0, 3596.0), (2, 0, 900, 900 * 100, 0.0, 3596.0)]
    rows += [(1, 1, 225, 225 * 100, 0.0, 3584.0), (1, 2, 1, 100, 0.0, 0.0)]
    st = summarise_stats(rows)
    assert st.entries == 2026 and st.cameras == 2 and st.bytes == 202_600
    assert st.levels[0].camera_hours == pytest.approx(2.0)
    assert st.levels[0].bytes_per_camera_hour == pytest.approx(90_000)
    assert st.levels[1].bytes_per_camera_hour == pytest.approx(22_500)
    assert st.levels[2].bytes_per_camera_hour is None


@pytest.mark.parametrize("dtype", ["int8", "fp16", "fp32"])
def test_pack_unpack_round_trip_and_chunk_sizes(dtype: str) -> None:
    ct = make_clip(7, 0, 1234.5, dtype=dtype, seed=1, thumb=b"jpeg")  # type: ignore[arg-type]
    payload = L.pack(ct)
    chunks = L.split_chunks(payload)
    assert all(len(c) <= 64 * 1024 - 64 for c in chunks)
    expected = {"int8": 2, "fp16": 3, "fp32": 5}[dtype]
    assert len(chunks) == expected
    assert L.unpack_chunks(chunks, thumb=ct.thumb) == ct
    assert L.unpack(payload, thumb=ct.thumb) == ct


def test_unpack_refuses_garbage_and_torn_values() -> None:
    with pytest.raises(ValueError):
        L.unpack(b"nope")
    payload = L.pack(make_clip(1, 0, 0.0, tokens=4, channels=8))
    with pytest.raises(ValueError, match="header says"):
        L.unpack(payload[:-1])
    assert L.complete([b"a", None]) is None
    assert L.complete([b"a", b"b"]) == [b"a", b"b"]
    tiny = make_clip(1, 0, 0.0, tokens=4, channels=8)
    assert L.unpack_chunks(L.split_chunks(L.pack(tiny), size=76)) == tiny  # scales spill over


def test_keys_share_the_camera_hash_tag() -> None:
    k = L.Keys()
    names = [k.levels(42), k.index(42, 1), k.stream(42, 0), k.chunk(42, 0, 5, 1), k.thumb(42, 0, 5)]
    assert all(n.startswith("fw:{42}:") for n in names)
    assert k.cameras() == "fw:cameras"
    e = L.parse_entry(L.entry_name(5, 2, 65736, 1234))
    assert (e.t0_ms, e.chunks, e.payload_bytes, e.thumb_bytes) == (5, 2, 65736, 1234)
