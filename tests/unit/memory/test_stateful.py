"""Hypothesis stateful test: each backend against a dict model, operations in random orders.

The model is a dict keyed by clip id; put and replay overwrite, trim drops keys whose start is
before the level horizon (on the ms key, like the stores), delete drops a camera.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from flashwatch.messages import ClipTokens
from memory import MemoryStore
from memory.redis_store import RedisStore
from memory.sqlite_store import SqliteStore
from memory.store import key_ms, retention_horizon_ms
from memory.testing import make_clip

HOURS = [0.01, 0.02]  # 36 s at level 0, 72 s at levels >= 1
CAMS = st.integers(0, 2)
LEVELS = st.integers(0, 2)
TIMES = st.integers(0, 400).map(lambda i: 1000.0 + i * 0.5)
SETTINGS = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def machine_for(open_store: Callable[[], MemoryStore]) -> type[RuleBasedStateMachine]:
    class MemoryModel(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.store = open_store()
            self.model: dict[tuple[int, int, int], ClipTokens] = {}
            self.seed = 0

        def _put(self, ct: ClipTokens) -> None:
            self.store.put(ct)
            self.model[ct.clip_id] = ct

        @rule(cam=CAMS, level=LEVELS, t0=TIMES, dtype=st.sampled_from(["int8", "fp16"]))
        def put(self, cam: int, level: int, t0: float, dtype: str) -> None:
            self.seed += 1
            thumb = b"th%d" % self.seed if level == 0 else None
            self._put(
                make_clip(
                    cam,
                    level,
                    t0,
                    dtype=dtype,
                    tokens=2,
                    channels=4,  # type: ignore[arg-type]
                    epoch=self.seed,
                    thumb=thumb,
                    seed=self.seed,
                )
            )

        @rule(data=st.data())
        def replay(self, data: st.DataObject) -> None:
            if self.model:
                key = data.draw(st.sampled_from(sorted(self.model)))
                self._put(self.model[key])

        @rule(cams=st.lists(CAMS, min_size=1, max_size=3), level=LEVELS, t0=TIMES)
        def put_many(self, cams: list[int], level: int, t0: float) -> None:
            self.seed += 1
            cts = [make_clip(c, level, t0, tokens=2, channels=4, seed=self.seed) for c in cams]
            self.store.put_many(cts)
            for ct in cts:
                self.model[ct.clip_id] = ct

        @rule(cam=CAMS, level=LEVELS, a=TIMES, b=TIMES)
        def range_matches(self, cam: int, level: int, a: float, b: float) -> None:
            lo, hi = key_ms(a), key_ms(b)
            want = [
                self.model[k].epoch
                for k in sorted(self.model)
                if k[0] == cam and k[1] == level and lo <= k[2] <= hi
            ]
            got = self.store.range(cam, level, a, b)
            assert [c.epoch for c in got] == want
            assert [c.t[0] for c in got] == sorted(c.t[0] for c in got)

        @rule(data=st.data())
        def trim_at_a_boundary(self, data: st.DataObject) -> None:
            """`now` chosen so some clip sits exactly on its level's horizon (it must stay)."""
            if self.model:
                _cam, level, ms = data.draw(st.sampled_from(sorted(self.model)))
                self.trim(ms / 1000 + HOURS[min(level, len(HOURS) - 1)] * 3600)

        @rule(now=st.floats(1000.0, 1400.0))
        def trim(self, now: float) -> None:
            expired = [k for k in self.model if k[2] < retention_horizon_ms(k[1], HOURS, now)]
            assert self.store.trim(now) == len(expired)
            for k in expired:
                del self.model[k]

        @rule(cam=CAMS)
        def delete_camera(self, cam: int) -> None:
            self.store.delete_camera(cam)
            self.model = {k: v for k, v in self.model.items() if k[0] != cam}

        @rule(cam=CAMS, level=LEVELS, n=st.integers(0, 5))
        def latest_matches(self, cam: int, level: int, n: int) -> None:
            keys = sorted(k for k in self.model if k[0] == cam and k[1] == level)
            want = [self.model[k] for k in keys[-n:]] if n else []
            got = self.store.latest(cam, level, n, thumbs=True)
            assert got == want

        @invariant()
        def coverage_matches(self) -> None:
            for cam in range(3):
                want: dict[int, tuple[float, float, int]] = {}
                for c, lvl, ms in sorted(self.model):
                    if c == cam:
                        lo, _, n = want.get(lvl, (ms / 1000, 0.0, 0))
                        want[lvl] = (lo, ms / 1000, n + 1)
                assert {k: tuple(v) for k, v in self.store.coverage(cam).items()} == want
            assert self.store.stats().entries == len(self.model)

        def teardown(self) -> None:
            for cam in range(3):
                self.store.delete_camera(cam)
            self.store.close()

    return MemoryModel


def test_sqlite_matches_model(tmp_path: Path) -> None:
    def open_store() -> MemoryStore:
        return SqliteStore(tmp_path / f"{uuid.uuid4().hex}.sqlite3", HOURS)

    run_state_machine_as_test(machine_for(open_store), settings=SETTINGS)


@pytest.mark.integration
def test_redis_matches_model(redis_url: str) -> None:
    def open_store() -> MemoryStore:
        return RedisStore(redis_url, HOURS, namespace=f"fwh{uuid.uuid4().hex[:10]}", retries=2)

    run_state_machine_as_test(machine_for(open_store), settings=SETTINGS)
