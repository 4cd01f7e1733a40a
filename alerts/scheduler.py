"""The live rule scheduler: evaluates every enabled (rule, camera) as level-0 clips complete
each step, batching all rules due on the same camera window into one reasoner call.

One pass (`run_once`) reads the watch plan from the registry, asks memory how far each camera's
level-0 footage reaches (`coverage`, one pipelined round trip per camera), works out which
windows are due per rule (policy.due_window_ends), groups rules by identical window, and
evaluates each window once. Outcomes are committed per window in one transaction
(store.commit_window), so a restart resumes exactly after the last committed window and a
replayed window maps to the same dedup key.

Work is ordered by urgency: live windows first; then, in passes with no live window due, one
pending reason (a generation, ~1 s per rule on the CPU: an alert is posted at once and its
notifications are held at most `reason_wait_s` for the reason); then backfill windows.

Only cameras whose rule shard this replica owns are scheduled (`alerts.leadership`: PostgreSQL
advisory locks; every shard on SQLite): the plan is filtered each pass, backfill included, and
each window is committed under `leadership.guard(camera)`, which re-checks ownership, so a
replica that lost a shard stops at its next window.

Polling coverage, rather than blocking in `wait_new` per camera, keeps one thread for any number
of cameras; at the default 0.5 s poll the added latency is far below a step (8 s).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlmodel import Session

from alerts.backfill import BackfillRunner
from alerts.evaluate import EvalConfig, WindowEvaluator, WindowOutcome, skip_update
from alerts.leadership import Leadership, LocalShards
from alerts.metrics import AlertMetrics
from alerts.policy import RuleState, clip_span_s, due_window_ends
from alerts.store import AlertDraft, StateUpdate, commit_window, load_states, set_text, watch_plan
from flashwatch.db.models import Camera, Rule
from flashwatch.messages import CameraWindow
from flashwatch.protocols import Reasoner, ReasonerBusy
from flashwatch.security import safe_error
from memory.store import MemoryStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _TextJob:
    alert_id: int
    camera: Camera
    rule: Rule
    start: float
    end: float


@dataclass(frozen=True)
class SchedulerConfig:
    poll_interval_s: float = 0.5
    """How often each camera's coverage is checked when no window was due."""
    max_catchup: int = 8
    """Windows per rule evaluated after an outage; older ones are skipped (bounded lag)."""
    min_coverage: float = 0.9
    """Share of a window level-0 clips must cover, else the window is skipped and recorded."""
    max_evidence: int = 16
    max_window_failures: int = 3
    """Reasoner errors on one window before it is skipped (recorded) instead of retried."""
    reason_wait_s: float = 2.0
    """Hold an alert's notifications at most this long for its generated reason."""
    report_wait_s: float = 60.0
    """Hold a report's notifications at most this long for its answer (the answer is the
    report, so it waits longer)."""
    backfill_windows_per_idle_pass: int = 2
    backfill_notify: bool = False
    """Send backfilled alerts to the rule's sinks too (off: history should not page anyone)."""


class AlertScheduler:
    """Start with `start()`, stop with `stop()`; `run_once()` is one synchronous pass."""

    def __init__(
        self,
        engine: Engine,
        memory: MemoryStore,
        reasoner: Reasoner,
        *,
        config: SchedulerConfig | None = None,
        metrics: AlertMetrics | None = None,
        clock: Callable[[], float] = time.time,
        leadership: Leadership | None = None,
    ) -> None:
        self.engine = engine
        self.leadership: Leadership = leadership or LocalShards()
        self.memory = memory
        self.config = config or SchedulerConfig()
        self.metrics = metrics or AlertMetrics()
        self.clock = clock
        self.evaluator = WindowEvaluator(
            memory,
            reasoner,
            self.metrics,
            EvalConfig(
                min_coverage=self.config.min_coverage, max_evidence=self.config.max_evidence
            ),
        )
        self.backfill = BackfillRunner(
            engine, memory, self.evaluator, self.metrics, notify=self.config.backfill_notify,
            guard=self.leadership.guard,
        )  # fmt: skip
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._busy_until = 0.0
        self._failures: dict[tuple[int, float, float], int] = {}
        self._texts: deque[_TextJob] = deque()
        self._text_s = 0.0  # moving average of one reason's generation time
        self._reported: set[str] = set()  # cameras with per-camera gauges set

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="alert-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after the window in progress (its outcome is committed or not at all)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                done = self.run_once()
            except Exception as exc:  # registry or memory down: keep the thread alive
                log.warning("alert pass failed: %s", safe_error(exc))
                done = 0
            wait = max(self.config.poll_interval_s, self._busy_until - time.monotonic())
            if done == 0:
                self._stop.wait(wait)

    # -- one pass ------------------------------------------------------------------------

    def run_once(self) -> int:
        """Evaluate every due window once; returns how many windows were scored."""
        if time.monotonic() < self._busy_until:
            return 0
        with Session(self.engine, expire_on_commit=False) as session:
            plan = self._owned(watch_plan(session))
        scored = 0
        try:
            for camera, rules in plan:
                scored += self._camera(camera, rules)
                if self._stop.is_set():
                    return scored
            if scored == 0 and self._texts:
                scored += self._next_text()
            elif scored == 0:
                scored += self.backfill.run(
                    plan, self.clock(), self.config.backfill_windows_per_idle_pass
                )
        except ReasonerBusy as busy:
            self.metrics.reasoner_busy.inc()
            self._busy_until = time.monotonic() + max(0.05, busy.retry_after_s)
        return scored

    def _owned(self, plan: list[tuple[Camera, list[Rule]]]) -> list[tuple[Camera, list[Rule]]]:
        """The part of the plan whose shards this replica owns (per-camera gauges of the
        others are removed: their owner reports them)."""
        mine = [(c, r) for c, r in plan if c.id is not None and self.leadership.owns_camera(c.id)]
        names = {str(c.id) for c, _ in mine}
        for gone in self._reported - names:
            for gauge in (self.metrics.rules_per_camera, self.metrics.lag):
                with contextlib.suppress(KeyError):  # never set
                    gauge.remove(gone)
        self._reported = names
        return mine

    def _camera(self, camera: Camera, rules: Sequence[Rule]) -> int:
        assert camera.id is not None
        cam = str(camera.id)
        self.metrics.rules_per_camera.labels(camera=cam).set(len(rules))
        try:
            level0 = self.memory.coverage(camera.id).get(0)
        except Exception as exc:
            log.warning("coverage of camera %s failed: %s", camera.id, safe_error(exc))
            return 0
        if level0 is None:
            return 0
        covered_until = level0.latest + clip_span_s(camera.sample_interval_s)
        with Session(self.engine, expire_on_commit=False) as session:
            states = load_states(session, camera.id, [r.id for r in rules if r.id is not None])
        self.backfill.ensure(camera, rules, states, covered_until)
        due: dict[tuple[float, float], list[Rule]] = {}
        lag_skips: list[StateUpdate] = []
        for rule in rules:
            assert rule.id is not None
            prev = states.get(rule.id, RuleState())
            ends, dropped = due_window_ends(
                prev.last_end, covered_until, rule.step_s, max_catchup=self.config.max_catchup
            )
            if dropped:
                self.metrics.windows_skipped.labels(reason="lag").inc(dropped)
                why = f"lagging: {dropped} older windows not evaluated"
                lag_skips.append(StateUpdate(rule.id, camera.id, prev, None, why, dropped))
            for end in ends:
                due.setdefault((end - rule.window_s, end), []).append(rule)
        if lag_skips:
            with self.leadership.guard(camera.id) as mine:
                if not mine:
                    return 0
                commit_window(self.engine, lag_skips, [])
        scored = 0
        for start, end in sorted(due, key=lambda w: (w[1], w[0])):
            if not self.leadership.owns_camera(camera.id):  # lost mid-pass: spare the reasoner
                break
            outcome: WindowOutcome | None
            try:
                outcome = self.evaluator.evaluate(
                    camera, start, end, due[(start, end)], states, defer_text=True
                )
                self._failures.pop((camera.id, start, end), None)
            except ReasonerBusy:
                raise
            except Exception as exc:  # retry next pass; give the window up after a few tries
                outcome = self._failed(camera, start, end, due[(start, end)], states, exc)
            if outcome is None:
                break
            self._set_holds(outcome.drafts)
            needing = {d.dedup_key: d for d in outcome.drafts if d.needs_text}
            with self.leadership.guard(camera.id) as mine:
                # Re-checked at the commit: the shard may have gone while the reasoner ran.
                created = (
                    commit_window(self.engine, outcome.updates, outcome.drafts) if mine else None
                )
            if created is None:
                log.info(
                    "camera %s: shard no longer owned, window %s not committed", camera.id, end
                )
                break
            for alert in created:
                self.metrics.fired.labels(kind=alert.kind, backfilled="false").inc()
                draft = needing.get(alert.dedup_key)
                if draft is not None and alert.id is not None:
                    self._texts.append(_TextJob(alert.id, camera, draft.rule, start, end))
            for up in outcome.updates:  # later windows of this pass build on this one
                states[up.rule_id] = up.state
            scored += int(outcome.scored)
            if self._stop.is_set():
                break
        newest = max((s.last_end for s in states.values() if s.last_end is not None), default=None)
        if newest is not None:
            self.metrics.lag.labels(camera=cam).set(max(0.0, self.clock() - newest))
        return scored

    def _set_holds(self, drafts: Sequence[AlertDraft]) -> None:
        """How long each new alert's notifications wait for its text.

        A report waits for its answer (it is the content). An alert waits `reason_wait_s` only
        if its reason can plausibly be generated in that time, judging from the queue ahead
        of it and the measured generation time; otherwise it is sent at once and the reason
        reaches the alert row (API, SSE) later.
        """
        ahead = len(self._texts)
        for d in drafts:
            if not d.needs_text:
                continue
            if d.kind == "report":
                d.hold_s = self.config.report_wait_s
                continue
            ahead += 1
            fits = ahead * self._text_s <= self.config.reason_wait_s
            d.hold_s = self.config.reason_wait_s if fits else 0.0

    def _next_text(self) -> int:
        """Generate one pending reason/answer (oldest first) and release its notifications.

        Runs only in passes with no live window due, one rule at a time (a generation costs
        about a second on the CPU), so reasons never delay the next alert. Pending texts live
        in memory: after a crash the held notifications still go out when their hold ends,
        just without a reason.
        """
        job = self._texts.popleft()
        window = CameraWindow(camera_id=job.camera.id or 0, camera_name=job.camera.name,
                              t_from=job.start, t_to=job.end)  # fmt: skip
        t0 = time.perf_counter()
        try:
            text = self.evaluator.reasons(window, [job.rule]).get(job.rule.id or 0, "")
        except ReasonerBusy:
            self._texts.appendleft(job)
            raise
        self._text_s += 0.3 * (time.perf_counter() - t0 - self._text_s)
        set_text(self.engine, job.alert_id, text)
        return 1

    def _failed(
        self,
        camera: Camera,
        start: float,
        end: float,
        rules: Sequence[Rule],
        states: dict[int, RuleState],
        exc: Exception,
    ) -> WindowOutcome | None:
        """None: retry the window next pass. After `max_window_failures` errors in a row the
        window is skipped and recorded, so one poison window cannot stall a camera."""
        assert camera.id is not None
        log.warning("scoring camera %s window %s failed: %s", camera.id, end, safe_error(exc))
        key = (camera.id, start, end)
        self._failures[key] = tries = self._failures.get(key, 0) + 1
        if tries < self.config.max_window_failures:
            return None
        del self._failures[key]
        self.metrics.windows_skipped.labels(reason="error").inc(len(rules))
        why = f"evaluation failed: {safe_error(exc)}"
        return WindowOutcome(updates=[skip_update(r, camera, states, end, why) for r in rules])
