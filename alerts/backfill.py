"""Backfill: evaluate a newly created rule over stored level-0 history ("it already happened
3 times today"), with the same windows, step, hysteresis and cooldown as live evaluation.

A rule with `backfill_s > 0` gets one `AlertBackfill` row per camera the first time the live
scheduler meets the pair; live evaluation starts at the newest window and backfill covers the
history before it, so the two never evaluate the same window. Progress (next window end, the
backfill's own hysteresis history and cooldown, counts) is committed with each window's alerts
in one transaction: killed at any point, it resumes at the first uncommitted window.

Like live windows, a backfill window is committed only while this replica owns the camera's
rule shard (`guard`, see alerts.leadership); the scheduler passes only owned cameras.

It runs only in scheduler passes with no live work, a few windows at a time, so a backfill of
days of footage never delays a live alert by more than those few windows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from alerts.evaluate import WindowEvaluator
from alerts.metrics import AlertMetrics
from alerts.policy import RuleState, align_down
from alerts.store import AlertDraft, insert_alert
from flashwatch.db.models import AlertBackfill, Camera, Rule, utcnow
from memory.store import MemoryStore

log = logging.getLogger(__name__)
ACTIVE = ("pending", "running")


def backfill_range(
    covered_until: float, step_s: float, window_s: float, backfill_s: float
) -> tuple[float, float, int]:
    """(first window end, last window end, number of windows) of a backfill.

    The last end is one step before the newest complete window (which live evaluation takes);
    the first is the earliest step boundary whose whole window lies within `backfill_s`.
    """
    last = align_down(covered_until, step_s) - step_s
    first = math.ceil(round((last - backfill_s + window_s) * 1000) / round(step_s * 1000)) * step_s
    count = max(0, round((last - first) / step_s) + 1)
    return first, last, count


class BackfillRunner:
    def __init__(
        self,
        engine: Engine,
        memory: MemoryStore,
        evaluator: WindowEvaluator,
        metrics: AlertMetrics,
        *,
        notify: bool = False,
        guard: Callable[[int], AbstractContextManager[bool]] | None = None,
    ) -> None:
        self.engine = engine
        self.guard = guard or (lambda _camera_id: nullcontext(True))
        self.memory = memory
        self.evaluator = evaluator
        self.metrics = metrics
        self.notify = notify

    def ensure(
        self,
        camera: Camera,
        rules: Sequence[Rule],
        states: dict[int, RuleState],
        covered_until: float,
    ) -> None:
        """Create backfill rows for rules meeting this camera for the first time."""
        new = [r for r in rules if r.backfill_s > 0 and r.id not in states]
        if not new:
            return
        with Session(self.engine, expire_on_commit=False) as session:
            for rule in new:
                assert rule.id is not None and camera.id is not None
                if session.get(AlertBackfill, (rule.id, camera.id)) is not None:
                    continue
                first, last, count = backfill_range(
                    covered_until, rule.step_s, rule.window_s, rule.backfill_s
                )
                session.add(
                    AlertBackfill(
                        rule_id=rule.id, camera_id=camera.id, t_from=first - rule.window_s,
                        t_to=last, next_end=first, windows_total=count,
                        status="pending" if count else "done",
                    )
                )  # fmt: skip
            session.commit()

    def run(self, plan: Sequence[tuple[Camera, Sequence[Rule]]], now: float, budget: int) -> int:
        """Evaluate up to `budget` backfill windows; returns how many were scored."""
        if budget <= 0:
            return 0
        watched = {(r.id, c.id): (c, r) for c, rules in plan for r in rules}
        with Session(self.engine, expire_on_commit=False) as session:
            jobs = session.exec(
                select(AlertBackfill)
                .where(col(AlertBackfill.status).in_(ACTIVE))
                .order_by(col(AlertBackfill.created_at))
            ).all()
        scored = 0
        for job in jobs:
            pair = watched.get((job.rule_id, job.camera_id))
            if pair is None:  # rule disabled or camera no longer selected: wait
                continue
            while scored < budget and job.status in ACTIVE:
                scored += self._one(job, *pair)
            if scored >= budget:
                break
        return scored

    def _one(self, job: AlertBackfill, camera: Camera, rule: Rule) -> int:
        assert rule.id is not None
        end = job.next_end
        if end > job.t_to + 1e-6:
            job.status = "done"
            self._save(job, [])
            return 0
        state = RuleState(last_end=None, history=tuple(job.history),
                          cooldown_until=job.cooldown_until)  # fmt: skip
        outcome = self.evaluator.evaluate(
            camera, end - rule.window_s, end, [rule], {rule.id: state}, backfilled=True
        )
        for draft in outcome.drafts:
            draft.notify = self.notify
        for up in outcome.updates:
            job.history = list(up.state.history)
            job.cooldown_until = up.state.cooldown_until
            if up.skip_reason is not None:
                job.skipped += 1
        job.windows_done += 1
        job.next_end = end + rule.step_s
        job.status = "running" if job.next_end <= job.t_to + 1e-6 else "done"
        created = self._save(job, outcome.drafts)
        if job.status == "paused":  # not committed: the shard's owner evaluates it again
            return 0
        job.alerts += created
        self.metrics.backfill_windows.inc()
        for draft in outcome.drafts[:created]:
            self.metrics.fired.labels(kind=draft.kind, backfilled="true").inc()
        return int(outcome.scored)

    def _save(self, job: AlertBackfill, drafts: Sequence[AlertDraft]) -> int:
        """Commit the job's progress together with its new alerts; returns how many."""
        now = utcnow()
        created = 0
        with (
            self.guard(job.camera_id) as mine,
            Session(self.engine, expire_on_commit=False) as session,
        ):
            if not mine:  # shard lost meanwhile: its new owner resumes from the last commit
                job.status = "paused"  # local only: ends this run's loop over the job
                return 0
            for draft in drafts:
                created += insert_alert(session, draft, now) is not None
            row = session.get(AlertBackfill, (job.rule_id, job.camera_id))
            if row is None:  # rule or camera deleted meanwhile
                session.rollback()
                job.status = "done"
                return 0
            for name in ("next_end", "status", "windows_done", "skipped", "history",
                         "cooldown_until"):  # fmt: skip
                setattr(row, name, getattr(job, name))
            row.alerts = job.alerts + created
            row.updated_at = now
            session.add(row)
            session.commit()
        return created


def progress(session: Session, rule_id: int) -> list[AlertBackfill]:
    """Backfill rows of a rule (one per camera), for the progress route."""
    return list(
        session.exec(
            select(AlertBackfill)
            .where(AlertBackfill.rule_id == rule_id)
            .order_by(col(AlertBackfill.camera_id))
        ).all()
    )
