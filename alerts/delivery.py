"""The delivery worker: drains the outbox (`alert_delivery`) into the sinks.

Claiming a row pushes its `next_attempt_at` one lease ahead and counts the attempt, in its
own committed transaction, before anything is sent. A worker that dies mid-delivery (SIGKILL,
power loss) therefore leaves the row to be retried by any worker once the lease runs out,
never lost; the receiver sees the same idempotency key twice at most per lost outcome
(at-least-once, arq's "multiple times over zero times"). Counting the attempt at claim time
also caps a delivery that crashes its worker every time.

Failures back off exponentially (capped, jittered) and after `max_retries` retries the row is
`failed` with its last error, visible through the API. Sends run on a small thread pool so one
slow or dead receiver does not hold up other rules' notifications.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from alerts.metrics import AlertMetrics
from alerts.policy import retry_delay
from alerts.sinks import DeliveryError, Sink
from alerts.store import alert_event, ts
from flashwatch.db.models import Alert, AlertDelivery, Camera, Rule
from flashwatch.messages import AlertEvent
from flashwatch.security import safe_error

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliveryConfig:
    max_retries: int = 6
    """Retries after the first attempt; then the delivery is recorded as failed."""
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    lease_s: float = 30.0
    """How long a claimed delivery is hidden from other workers; must exceed a send's timeout."""
    batch: int = 32
    concurrency: int = 4
    poll_interval_s: float = 0.25


@dataclass(frozen=True)
class _Claim:
    id: int
    attempts: int
    sink_type: str
    target: str
    event: AlertEvent


class DeliveryWorker:
    """`start()`/`stop()` a polling thread, or call `run_once()` (tests, one-shot drains)."""

    def __init__(
        self,
        engine: Engine,
        sinks: Mapping[str, Sink],
        *,
        config: DeliveryConfig | None = None,
        metrics: AlertMetrics | None = None,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.engine = engine
        self.sinks = dict(sinks)
        self.config = config or DeliveryConfig()
        self.metrics = metrics or AlertMetrics()
        self.clock = clock
        self.jitter = jitter
        self._pool = ThreadPoolExecutor(max(1, self.config.concurrency), "alert-delivery")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="alert-delivery", daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self._pool.shutdown(wait=True)
        for sink in self.sinks.values():
            sink.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                done = self.run_once()
            except Exception as exc:
                log.warning("delivery pass failed: %s", safe_error(exc))
                done = 0
            if done == 0:
                self._stop.wait(self.config.poll_interval_s)

    def run_once(self) -> int:
        """Claim due deliveries, send them, record outcomes; returns how many were tried."""
        claims = self._claim()
        for claim, error in zip(claims, self._pool.map(self._send, claims), strict=True):
            self._record(claim, error)
        return len(claims)

    def _claim(self) -> list[_Claim]:
        now = self.clock()
        claims: list[_Claim] = []
        with Session(self.engine, expire_on_commit=False) as session:
            stmt = (
                select(AlertDelivery)
                .where(AlertDelivery.status == "pending")
                .where(col(AlertDelivery.next_attempt_at) <= ts(now))
                .order_by(col(AlertDelivery.next_attempt_at))
                .limit(self.config.batch)
            )
            if session.get_bind().dialect.name == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)
            rows = session.exec(stmt).all()
            names: dict[int, tuple[str, str]] = {}
            for row in rows:
                assert row.id is not None
                # Conditional on the attempt count we read: of two workers racing for a row
                # (SQLite has no SKIP LOCKED) exactly one claims it.
                claimed = session.connection().execute(
                    update(AlertDelivery)
                    .where(
                        col(AlertDelivery.id) == row.id,
                        col(AlertDelivery.attempts) == row.attempts,
                        col(AlertDelivery.status) == "pending",
                    )
                    .values(
                        attempts=row.attempts + 1, next_attempt_at=ts(now + self.config.lease_s)
                    )
                )
                alert = session.get(Alert, row.alert_id)
                if claimed.rowcount != 1 or alert is None:
                    continue
                if row.alert_id not in names:
                    rule, cam = (
                        session.get(Rule, alert.rule_id),
                        session.get(Camera, alert.camera_id),
                    )
                    names[row.alert_id] = (rule.name if rule else "", cam.name if cam else "")
                rule_name, cam_name = names[row.alert_id]
                claims.append(
                    _Claim(row.id, row.attempts + 1, row.sink_type, row.target,
                           alert_event(alert, rule_name, cam_name))
                )  # fmt: skip
            session.commit()
        return claims

    def _send(self, claim: _Claim) -> DeliveryError | None:
        sink = self.sinks.get(claim.sink_type)
        if sink is None:
            return DeliveryError(f"no {claim.sink_type!r} sink configured", retry=True)
        try:
            sink.send(claim.target, claim.event)
        except DeliveryError as exc:
            return exc
        except Exception as exc:  # a sink bug must not kill the worker
            return DeliveryError(safe_error(exc), retry=True)
        return None

    def _record(self, claim: _Claim, error: DeliveryError | None) -> None:
        now = self.clock()
        with Session(self.engine, expire_on_commit=False) as session:
            row = session.get(AlertDelivery, claim.id)
            if row is None or row.attempts != claim.attempts or row.status != "pending":
                return  # deleted, or the lease ran out and another worker took it over
            if error is None:
                row.status, row.delivered_at, row.last_error = "delivered", ts(now), None
                self.metrics.deliveries.labels(sink=claim.sink_type).inc()
            else:
                final = not error.retry or claim.attempts > self.config.max_retries
                row.last_error = str(error)[:500]
                if final:
                    row.status = "failed"
                else:
                    delay = retry_delay(
                        claim.attempts, base_s=self.config.backoff_base_s,
                        cap_s=self.config.backoff_cap_s, jitter=0.5 * self.jitter(),
                    )  # fmt: skip
                    if error.retry_after_s is not None:
                        delay = max(delay, min(error.retry_after_s, self.config.backoff_cap_s))
                    row.next_attempt_at = ts(now) + timedelta(seconds=delay)
                self.metrics.delivery_failures.labels(
                    sink=claim.sink_type, final=str(final).lower()
                ).inc()
            session.add(row)
            session.commit()
