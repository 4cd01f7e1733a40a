"""Acceptance A4 (shared/ACCEPTANCE.md): a query flood is admitted up to capacity, the rest
get 429 with Retry-After, and alert evaluation keeps its priority.

Real pieces: the API over real HTTP (uvicorn), the reasoner's `EngineService` (one worker
thread, scores before questions) over a `LocalReasoner` on a tiny random checkpoint, an
embedded SQLite memory, and the alert scheduler scoring through the same service.
N values: 12 client threads posting questions until the steps are done,
`api.max_concurrent_queries` = 2; 4 scheduler steps measured before and during the flood.
The pass bound is a ratio against the baseline measured in the same run (machines are
noisy): mean step time under flood ≤ 3× baseline + 1 s.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from alerts import AlertMetrics, AlertScheduler
from flashwatch.config import ReasonerConfig
from memory.sqlite_store import SqliteStore
from tests.apiharness import live_server, make_api, settings_for
from tests.integration.alerts.helpers import T0, feed
from tests.waiting import wait_for

pytestmark = [pytest.mark.acceptance, pytest.mark.integration, pytest.mark.slow]

# How long the flood may take to get a question into the reasoner (normally well under 1 s;
# the bound only keeps a broken API or reasoner from hanging the test).
FLOOD_START_TIMEOUT_S = 30.0


def test_a4_query_flood_gets_429_and_alerts_keep_priority(tmp_path: Path) -> None:
    reasoner_engine = pytest.importorskip("reasoner.engine")
    reasoner_sched = pytest.importorskip("reasoner.scheduler")
    reasoner_testing = pytest.importorskip("reasoner.testing")
    api = make_api(settings_for(tmp_path, None, api={"max_concurrent_queries": 2}))
    cam = api.camera("gate")["id"]
    rule = api.rule("fence", [cam], window_s=64, step_s=8)
    store = SqliteStore(tmp_path / "mem.sqlite3", [1e6])
    feed(store, cam, T0, T0 + 240, real_shape=True)
    ck = reasoner_testing.write_tiny_checkpoint(tmp_path / "tiny", num_layers=4)
    local = reasoner_engine.LocalReasoner.from_config(
        ReasonerConfig(model_dir=ck, dtype="fp32"), store
    )
    service = reasoner_sched.EngineService(local)
    api.state.reasoner = service
    sched = AlertScheduler(api.state.engine, store, service,
                           metrics=AlertMetrics(CollectorRegistry()))  # fmt: skip
    sched.run_once()  # first window (end T0+240)
    end = [T0 + 240.0]

    def step() -> float:
        feed(store, cam, end[0], end[0] + 8, real_shape=True)
        end[0] += 8
        t = time.perf_counter()
        assert sched.run_once() == 1
        return time.perf_counter() - t

    statuses: Counter[int] = Counter()
    retry_after: list[str] = []
    answered_s: list[float] = []  # client-side latency of each answered question
    stop = threading.Event()
    lock = threading.Lock()

    def refused() -> int:
        with lock:
            return statuses[429]

    try:
        baseline = [step() for _ in range(4)]
        with live_server(api.state) as base:
            body = {"question": "what happens at the gate?", "camera_ids": [cam],
                    "since": "2023-11-14T22:13:20Z", "until": "2023-11-14T22:17:20Z"}  # fmt: skip

            def flood() -> None:
                with httpx.Client(base_url=base, headers=api.h("viewer"), timeout=120) as c:
                    while not stop.is_set():
                        r = c.post("/v1/queries", json=body)
                        with lock:
                            statuses[r.status_code] += 1
                            if r.status_code == 200:
                                answered_s.append(r.elapsed.total_seconds())
                            if r.status_code == 429:
                                retry_after.append(r.headers.get("Retry-After", ""))
                        if r.status_code == 429:
                            time.sleep(0.05)  # a client hammering far faster than Retry-After

            threads = [threading.Thread(target=flood) for _ in range(12)]
            for th in threads:
                th.start()
            # Let the flood fill the slots: the API has refused someone (both slots taken) and
            # a question is in the reasoner. A fixed sleep is too short on a loaded machine.
            waited = wait_for(
                lambda: refused() >= 1 and len(service.policy.queries) >= 1,
                FLOOD_START_TIMEOUT_S,
                lambda: f"the query flood to reach the reasoner (statuses {dict(statuses)})",
            )
            flooded, busy = [], []
            for _ in range(4):
                busy.append(len(service.policy.queries))  # questions queued or running now
                flooded.append(step())
            stop.set()
            for th in threads:
                th.join(120)
    finally:
        stop.set()  # also when a wait or a step failed: no flood thread outlives the test
        service.close()
        store.close()
    b, f = statistics.mean(baseline), statistics.mean(flooded)
    q = statistics.median(answered_s) if answered_s else float("inf")
    print(f"A4: flood in progress after {waited:.2f} s; statuses {dict(statuses)}; "
          f"questions in the reasoner at each step {busy}; "
          f"alert step {b:.3f} s baseline, {f:.3f} s in flood; question {q:.3f} s")  # fmt: skip
    assert all(n >= 1 for n in busy)  # the flood really was in progress during the steps
    assert statuses[200] >= 1 and statuses[429] >= 1  # admitted up to capacity, then refused
    assert set(statuses) <= {200, 429}  # never a server error
    assert all(v.isdigit() and int(v) >= 1 for v in retry_after)
    # Priority: an alert step waits at most for the question step in progress, never behind
    # whole questions (FIFO would make it wait one to two questions), so it stays well under
    # a question's latency. An absolute bound (the earlier `3 x baseline + 1 s`) fails on a
    # loaded 2-core machine with priority intact and passes on a fast one without it.
    assert f <= 0.5 * q, (baseline, flooded, q)
    assert rule["id"]
