"""Acceptance A1 and A2 (shared/ACCEPTANCE.md): webhook delivery survives a SIGKILLed worker
and a receiver that is down for a while, with every request HMAC-signed.

N values: A1 uses 3 alerts and a 1 s lease; A2 uses base 0.1 s / cap 0.4 s backoff, 6 retries,
and a receiver down for 0.8 s while another rule's receiver stays up and a third never returns.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from alerts.delivery import DeliveryConfig, DeliveryWorker
from alerts.metrics import AlertMetrics
from alerts.sinks import WebhookSink
from flashwatch.db.models import AlertDelivery
from flashwatch.messages import AlertEvent
from tests.integration.alerts.helpers import (
    SECRET,
    T0,
    WebhookReceiver,
    add_camera,
    add_rule,
    fire,
    registry,
)

pytestmark = [pytest.mark.acceptance, pytest.mark.integration]
CAM = 930_001
ROOT = Path(__file__).resolve().parents[2]

WORKER_SCRIPT = """
import sys, time
sys.path.insert(0, {root!r})
from alerts.delivery import DeliveryConfig, DeliveryWorker
from alerts.sinks import WebhookSink
from flashwatch.db.engine import create_db_engine
engine = create_db_engine({url!r})
w = DeliveryWorker(engine, {{"webhook": WebhookSink({secret!r})}},
                   config=DeliveryConfig(lease_s=1.0, poll_interval_s=0.05))
while True:
    w.run_once()
    time.sleep(0.05)
"""


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    eng = registry(tmp_path / "registry.db")
    add_camera(eng, CAM)
    return eng


def rows(engine: Engine) -> list[AlertDelivery]:
    with Session(engine) as s:
        return list(s.exec(select(AlertDelivery).order_by(AlertDelivery.id)).all())  # type: ignore[arg-type]


def wait_for(pred: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_a1_worker_killed_mid_delivery_delivers_once_per_key(
    engine: Engine, tmp_path: Path
) -> None:
    recv = WebhookReceiver()
    try:
        rule = add_rule(engine, "fence", [CAM], sinks=[{"type": "webhook", "url": recv.url}])
        keys = {fire(engine, rule, CAM, T0 + 8 * i).dedup_key for i in range(3)}
        recv.hold.set()  # requests arrive but are not answered: the worker is mid-delivery
        script = tmp_path / "worker.py"
        url = str(engine.url)
        script.write_text(WORKER_SCRIPT.format(root=str(ROOT), url=url, secret=SECRET))
        proc = subprocess.Popen([sys.executable, str(script)], cwd=ROOT)
        try:
            assert wait_for(lambda: set(recv.keys()) == keys, 30), recv.keys()
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        recv.hold.clear()
        assert all(r.status == "pending" and r.attempts == 1 for r in rows(engine))
        t_kill = time.monotonic()
        recovery = DeliveryWorker(
            engine, {"webhook": WebhookSink(SECRET)},
            config=DeliveryConfig(lease_s=1.0, poll_interval_s=0.05),
            metrics=AlertMetrics(CollectorRegistry()),
        )  # fmt: skip
        recovery.start()
        try:
            assert wait_for(lambda: all(r.status == "delivered" for r in rows(engine)), 15)
        finally:
            recovery.stop()
        recovered_s = time.monotonic() - t_kill
        per_key = Counter(recv.keys())
        print(f"A1: requests per key {dict(per_key)}, processed {len(recv.processed)}, "
              f"recovered in {recovered_s:.2f} s")  # fmt: skip
        assert set(recv.processed) == keys  # exactly one processed notification per window id
        assert all(1 <= n <= 2 for n in per_key.values())
        assert all(s.verified for s in recv.seen)
    finally:
        recv.hold.clear()
        recv.down()


class RecordingSink(WebhookSink):
    """The real webhook sink, noting when each target was attempted."""

    def __init__(self) -> None:
        super().__init__(SECRET)
        self.attempts: dict[str, list[float]] = {}
        self.lock = threading.Lock()

    def send(self, target: str, event: AlertEvent) -> None:
        with self.lock:
            self.attempts.setdefault(target, []).append(time.monotonic())
        super().send(target, event)


@pytest.fixture
def receivers() -> Iterator[list[WebhookReceiver]]:
    made = [WebhookReceiver() for _ in range(3)]
    yield made
    for r in made:
        r.down()


def test_a2_receiver_down_retries_capped_then_recovers_or_fails(
    engine: Engine, receivers: list[WebhookReceiver]
) -> None:
    flaky, steady, dead = receivers
    rules = [
        add_rule(engine, name, [CAM], sinks=[{"type": "webhook", "url": r.url}])
        for name, r in (("flaky", flaky), ("steady", steady), ("dead", dead))
    ]
    flaky.down()
    dead.down()
    for rule in rules:
        fire(engine, rule, CAM, T0 + 16)
    sink = RecordingSink()
    config = DeliveryConfig(max_retries=6, backoff_base_s=0.1, backoff_cap_s=0.4,
                            poll_interval_s=0.01, lease_s=5.0)  # fmt: skip
    w = DeliveryWorker(engine, {"webhook": sink}, config=config,
                       metrics=AlertMetrics(CollectorRegistry()), jitter=lambda: 0.0)  # fmt: skip
    t_start = time.monotonic()
    w.start()
    try:
        assert wait_for(lambda: steady.processed, 2.0)  # unaffected by the other two
        steady_s = time.monotonic() - t_start
        time.sleep(max(0.0, 0.8 - steady_s))
        flaky.up()
        assert wait_for(lambda: all(r.status != "pending" for r in rows(engine)), 15)
    finally:
        w.stop()
    by_url = {r.target: r for r in rows(engine)}
    assert by_url[steady.url].status == "delivered" and by_url[steady.url].attempts == 1
    assert by_url[flaky.url].status == "delivered" and by_url[flaky.url].attempts > 1
    failed = by_url[dead.url]
    assert failed.status == "failed" and failed.attempts == 7  # 1 + max_retries
    assert failed.last_error and "Connect" in failed.last_error
    times = sink.attempts[dead.url]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    expected = [min(0.4, 0.1 * 2**i) for i in range(len(gaps))]
    print(f"A2: steady delivered after {steady_s:.2f} s; flaky attempts "
          f"{by_url[flaky.url].attempts}; dead gaps {[round(g, 2) for g in gaps]}")  # fmt: skip
    assert all(g >= e * 0.9 for g, e in zip(gaps, expected, strict=True))  # exponential
    assert max(gaps) < 0.4 + 1.0  # capped (plus poll and scheduling slack on a busy machine)
    assert all(s.verified for r in receivers for s in r.seen)  # every request HMAC-signed
