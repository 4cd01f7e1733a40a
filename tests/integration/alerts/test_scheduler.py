"""The live scheduler against a real Redis memory and a migrated SQLite registry, with a
`ScriptedReasoner` stub deciding P(yes) per (rule, window)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import Engine
from sqlmodel import Session, delete, select

from alerts.metrics import AlertMetrics
from alerts.scheduler import AlertScheduler, SchedulerConfig
from flashwatch.db.models import AlertDelivery, AlertRuleState
from flashwatch.protocols import ReasonerBusy
from memory.redis_store import RedisStore
from tests.integration.alerts.helpers import (
    T0,
    ScriptedReasoner,
    add_camera,
    add_rule,
    alerts,
    feed,
    registry,
    thumb,
)

pytestmark = pytest.mark.integration
CAM, CAM2 = 910_001, 910_002


@pytest.fixture
def memory(redis_url: str) -> Iterator[RedisStore]:
    store = RedisStore(redis_url, [1e6], namespace=f"fwtest-alerts-{secrets.token_hex(4)}")
    yield store
    for cam in (CAM, CAM2):
        store.delete_camera(cam)
    store.close()


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    eng = registry(tmp_path / "registry.db")
    add_camera(eng, CAM)
    return eng


def scheduler(engine: Engine, memory: RedisStore, reasoner: ScriptedReasoner) -> AlertScheduler:
    metrics = AlertMetrics(CollectorRegistry())
    return AlertScheduler(
        engine, memory, reasoner, config=SchedulerConfig(max_catchup=50), metrics=metrics,
        clock=lambda: T0 + 100,
    )  # fmt: skip


def event_between(lo: float, hi: float, p_in: float = 0.9) -> ScriptedReasoner:
    """P(yes) high for windows ending in [lo, hi], low elsewhere."""
    return ScriptedReasoner(lambda _rule, end: p_in if lo <= end <= hi else 0.05)


def test_k_of_n_fires_once_with_evidence_thumbnail_and_reason(
    engine: Engine, memory: RedisStore
) -> None:
    r1 = add_rule(engine, "fence", [CAM], sinks=[{"type": "webhook", "url": "https://x.test/h"}])
    r2 = add_rule(engine, "queue", [CAM])  # same window/step: batched with r1
    reasoner = event_between(T0 + 32, T0 + 48)
    sched = scheduler(engine, memory, reasoner)
    feed(memory, CAM, T0, T0 + 24)
    assert sched.run_once() == 1  # first evaluation: newest window only (end T0+24)
    feed(memory, CAM, T0 + 24, T0 + 64)
    assert sched.run_once() == 5  # ends 32, 40, 48, 56, 64, one call each
    first = alerts(engine)[0]
    assert first.reason == ""  # posted first; reasons come in idle passes
    with Session(engine) as s:  # its notification waits (at most reason_wait_s) for it
        (held,) = s.exec(select(AlertDelivery)).all()
        assert held.next_attempt_at >= first.created_at + timedelta(seconds=1.5)
    assert sched.run_once() == 1 and sched.run_once() == 1 and sched.run_once() == 0
    calls = reasoner.score_calls()
    assert [c.window.t_to for c in calls] == [T0 + 24, T0 + 32, T0 + 40, T0 + 48, T0 + 56, T0 + 64]
    assert all(sorted(q.rule_id for q in c.rules) == [r1.id, r2.id] for c in calls)
    fired = alerts(engine)
    assert len(fired) == 2  # one per rule, both at the second passing window
    a = next(x for x in fired if x.rule_id == r1.id)
    assert a.window_end.timestamp() == T0 + 40
    assert a.window_start.timestamp() == T0 + 24
    assert a.reason == f"scripted reason for rule {r1.id}"
    assert [[q.rule_id for q in c.rules] for c in reasoner.explain_calls()] == [[r1.id], [r2.id]]
    # evidence: clips in the time both passing windows (ends 32 and 40) share
    assert a.evidence and all(T0 + 24 <= t <= T0 + 32 for t in a.evidence)
    assert a.thumbnail == thumb(CAM, a.evidence[len(a.evidence) // 2])
    with Session(engine) as s:
        out = s.exec(select(AlertDelivery)).all()
        assert [(d.alert_id, d.sink_type, d.status) for d in out] == [(a.id, "webhook", "pending")]
        assert out[0].next_attempt_at <= a.created_at + timedelta(seconds=1)  # released


def test_cooldown_suppresses_repeats(engine: Engine, memory: RedisStore) -> None:
    add_rule(engine, "steady", [CAM], cooldown_s=1000.0)
    sched = scheduler(engine, memory, ScriptedReasoner(lambda _r, _e: 0.95))
    feed(memory, CAM, T0, T0 + 16)
    sched.run_once()
    feed(memory, CAM, T0 + 16, T0 + 96)
    sched.run_once()
    assert len(alerts(engine)) == 1


def test_restart_neither_repeats_nor_duplicates(engine: Engine, memory: RedisStore) -> None:
    add_rule(engine, "fence", [CAM], hysteresis_k=1, hysteresis_n=1)
    feed(memory, CAM, T0, T0 + 32)
    first = event_between(T0, T0 + 100)
    scheduler(engine, memory, first).run_once()
    assert len(alerts(engine)) == 1
    # a new scheduler instance on the same registry: nothing new to evaluate
    second = event_between(T0, T0 + 100)
    scheduler(engine, memory, second).run_once()
    assert second.calls == [] and len(alerts(engine)) == 1
    # a replay (state lost, the same window evaluated again) maps to the same dedup key
    with Session(engine) as s:
        s.exec(delete(AlertRuleState))  # type: ignore[call-overload]
        s.commit()
    third = event_between(T0, T0 + 100)
    scheduler(engine, memory, third).run_once()
    assert len(third.score_calls()) == 1 and len(alerts(engine)) == 1


def test_missing_footage_is_skipped_and_recorded(engine: Engine, memory: RedisStore) -> None:
    rule = add_rule(engine, "fence", [CAM], window_s=32.0)
    reasoner = ScriptedReasoner(lambda _r, _e: 0.1)
    sched = scheduler(engine, memory, reasoner)
    feed(memory, CAM, T0, T0 + 32)
    sched.run_once()  # end 32: full
    feed(memory, CAM, T0 + 48, T0 + 56)  # 32..48 missing: windows 40 and 48 are half empty
    sched.run_once()
    assert [c.window.t_to for c in reasoner.calls] == [T0 + 32]
    with Session(engine) as s:
        st = s.get(AlertRuleState, (rule.id, CAM))
        assert st is not None
        assert st.skipped == 3 and st.evaluations == 1  # ends 40, 48, 56 lack footage
        assert st.last_end == T0 + 56
        assert st.last_skip_reason is not None and "missing footage" in st.last_skip_reason


@pytest.mark.parametrize("phase", [0.2, 1.2, 2.2, 3.1])
def test_clips_off_the_step_grid_cover_every_window(
    engine: Engine, memory: RedisStore, phase: float
) -> None:
    """Regression: a live camera's clips start on its own 4-frame grid, `phase` s after the
    rule's step grid. Coverage used to be measured on the clips scored (those mostly inside
    the window) only, so with phase 1.2, 2.2 or 3.1 every 8 s window looked 85 %, 77 % or
    89 % covered, was skipped as missing footage, and the camera never alerted (the
    distributed acceptance test waited for its first alert in vain)."""
    rule = add_rule(
        engine, "fence", [CAM], window_s=8.0, step_s=4.0, hysteresis_k=1, hysteresis_n=1
    )
    reasoner = ScriptedReasoner(lambda _r, _e: 0.9)
    sched = scheduler(engine, memory, reasoner)
    feed(memory, CAM, T0 + phase - 4, T0 + 20)  # continuous footage, no gap
    sched.run_once()
    feed(memory, CAM, T0 + phase + 20, T0 + 44)
    sched.run_once()
    ends = [c.window.t_to for c in reasoner.score_calls()]
    assert ends == [T0 + 20 + 4 * i for i in range(7)]
    with Session(engine) as s:
        st = s.get(AlertRuleState, (rule.id, CAM))
        assert st is not None and st.skipped == 0 and st.evaluations == 7
    assert len(alerts(engine)) == 7


def test_report_mode_posts_each_answer(engine: Engine, memory: RedisStore) -> None:
    add_rule(engine, "count", [CAM], mode="report")
    sched = scheduler(engine, memory, ScriptedReasoner(lambda _r, e: 0.3))
    feed(memory, CAM, T0, T0 + 32)
    sched.run_once()
    feed(memory, CAM, T0 + 32, T0 + 40)
    sched.run_once()
    reports = alerts(engine, kind="report")
    assert [r.reason for r in reports] == ["3 people", "3 people"]


def test_inactive_hours_cost_no_reasoner_call(engine: Engine, memory: RedisStore) -> None:
    # T0 is a Tuesday 22:13 UTC; active only 08:00-09:00
    hours = [{"days": [1], "start": "08:00", "end": "09:00"}]
    add_rule(engine, "office", [CAM], active_hours=hours)
    reasoner = ScriptedReasoner(lambda _r, _e: 0.9)
    feed(memory, CAM, T0, T0 + 32)
    scheduler(engine, memory, reasoner).run_once()
    assert reasoner.calls == [] and alerts(engine) == []


def test_busy_reasoner_leaves_the_window_for_later(engine: Engine, memory: RedisStore) -> None:
    rule = add_rule(engine, "fence", [CAM])
    busy = True

    def script(_r: int, _e: float) -> float:
        if busy:
            raise ReasonerBusy("full", retry_after_s=0.01)
        return 0.1

    sched = scheduler(engine, memory, ScriptedReasoner(script))
    feed(memory, CAM, T0, T0 + 32)
    assert sched.run_once() == 0
    with Session(engine) as s:
        assert s.get(AlertRuleState, (rule.id, CAM)) is None
    busy = False
    sched._busy_until = 0.0
    assert sched.run_once() == 1


def test_cameras_by_label_and_separate_windows(engine: Engine, memory: RedisStore) -> None:
    add_camera(engine, CAM2, labels={"zone": "yard"})
    add_rule(engine, "yard", [], camera_ids=None, camera_labels={"zone": "yard"})
    add_rule(engine, "everywhere", [], camera_ids=None, all_cameras=True, window_s=32.0)
    reasoner = ScriptedReasoner(lambda _r, _e: 0.1)
    feed(memory, CAM, T0, T0 + 32)
    feed(memory, CAM2, T0, T0 + 32)
    scheduler(engine, memory, reasoner).run_once()
    per_cam = sorted((c.window.camera_id, c.window.t_from, len(c.rules)) for c in reasoner.calls)
    assert per_cam == [(CAM, T0, 1), (CAM2, T0, 1), (CAM2, T0 + 16, 1)]


def test_reasoner_evidence_picks_the_thumbnail(engine: Engine, memory: RedisStore) -> None:
    add_rule(engine, "fence", [CAM], hysteresis_k=1, hysteresis_n=1)
    reasoner = ScriptedReasoner(lambda _r, _e: 0.9, evidence=lambda end: [end - 8, end - 16])
    feed(memory, CAM, T0, T0 + 32)
    scheduler(engine, memory, reasoner).run_once()
    (a,) = alerts(engine)
    assert a.evidence == [T0 + 16, T0 + 24]  # in time order
    assert a.thumbnail == thumb(CAM, T0 + 24)  # the most attended clip


def test_report_answer_is_generated_when_the_score_call_has_none(
    engine: Engine, memory: RedisStore
) -> None:
    rule = add_rule(engine, "count", [CAM], mode="report")
    reasoner = ScriptedReasoner(lambda _r, _e: 0.3, report_text=False)
    feed(memory, CAM, T0, T0 + 32)
    sched = scheduler(engine, memory, reasoner)
    while sched.run_once():
        pass
    (r,) = alerts(engine, kind="report")
    assert r.reason == f"scripted reason for rule {rule.id}" and r.thumbnail is None
    assert len(reasoner.explain_calls()) == 1


def test_a_window_that_keeps_failing_is_skipped_not_retried_forever(
    engine: Engine, memory: RedisStore
) -> None:
    rule = add_rule(engine, "fence", [CAM])

    def broken(_r: int, _e: float) -> float:
        raise RuntimeError("model exploded")

    sched = scheduler(engine, memory, ScriptedReasoner(broken))
    feed(memory, CAM, T0, T0 + 32)
    for _ in range(3):
        sched.run_once()
    with Session(engine) as s:
        st = s.get(AlertRuleState, (rule.id, CAM))
        assert st is not None and st.skipped == 1 and st.last_end == T0 + 32
        assert st.last_skip_reason is not None and "model exploded" in st.last_skip_reason


def test_lag_and_rules_per_camera_metrics(engine: Engine, memory: RedisStore) -> None:
    add_rule(engine, "a", [CAM])
    add_rule(engine, "b", [CAM])
    sched = scheduler(engine, memory, ScriptedReasoner(lambda _r, _e: 0.1))
    feed(memory, CAM, T0, T0 + 32)
    sched.run_once()
    reg = sched.metrics.registry
    assert reg.get_sample_value("fw_alert_lag_seconds", {"camera": str(CAM)}) == 100 - 32
    assert reg.get_sample_value("fw_alert_rules_per_camera", {"camera": str(CAM)}) == 2
    assert reg.get_sample_value("fw_alert_evaluations_total") == 2
    assert reg.get_sample_value("fw_alert_p_yes_count", {"rule": "1"}) == 1


def test_after_an_outage_catchup_is_bounded(engine: Engine, memory: RedisStore) -> None:
    rule = add_rule(engine, "fence", [CAM])
    reasoner = ScriptedReasoner(lambda _r, _e: 0.1)
    sched = AlertScheduler(engine, memory, reasoner, config=SchedulerConfig(max_catchup=2),
                           metrics=AlertMetrics(CollectorRegistry()))  # fmt: skip
    feed(memory, CAM, T0, T0 + 16)
    sched.run_once()
    feed(memory, CAM, T0 + 16, T0 + 96)  # the scheduler was away for 10 steps
    sched.run_once()
    assert [c.window.t_to for c in reasoner.calls] == [T0 + 16, T0 + 88, T0 + 96]
    with Session(engine) as s:
        st = s.get(AlertRuleState, (rule.id, CAM))
        assert st is not None and st.skipped == 8 and st.last_end == T0 + 96
        assert st.last_skip_reason is not None and "lagging" in st.last_skip_reason


def test_notifications_wait_only_for_reasons_that_can_arrive_in_time(
    engine: Engine, memory: RedisStore
) -> None:
    hook = [{"type": "webhook", "url": "https://x.test/h"}]
    for i in range(3):
        add_rule(engine, f"r{i}", [CAM], hysteresis_k=1, hysteresis_n=1, sinks=hook)
    add_rule(engine, "count", [CAM], mode="report", sinks=hook)
    sched = scheduler(engine, memory, ScriptedReasoner(lambda _r, _e: 0.9, report_text=False))
    sched._text_s = 0.9  # measured generation time: two reasons fit in reason_wait_s (2 s)
    feed(memory, CAM, T0, T0 + 32)
    sched.run_once()
    with Session(engine) as s:
        created = {a.id: a.created_at for a in alerts(engine)}
        rows = s.exec(select(AlertDelivery).order_by(AlertDelivery.alert_id)).all()  # type: ignore[arg-type]
        holds = [round((r.next_attempt_at - created[r.alert_id]).total_seconds()) for r in rows]
    assert holds == [2, 2, 0, 60]  # two reasons in time, the third not; a report waits


def test_two_schedulers_at_once_never_double_fire(engine: Engine, memory: RedisStore) -> None:
    """Leader election is not built: two alerts roles may run during a rollout. The dedup
    key is unique and a window's alert, state and outbox rows commit in one transaction,
    so the second writer's transaction fails whole: one alert and one delivery per window."""
    import threading

    from flashwatch.db.models import AlertDelivery as Delivery

    add_rule(engine, "fence", [CAM], hysteresis_k=1, hysteresis_n=1, cooldown_s=0,
             sinks=[{"type": "webhook", "url": "https://hooks.example.com/x"}])  # fmt: skip
    feed(memory, CAM, T0, T0 + 64)
    always = ScriptedReasoner(lambda _rule, _end: 0.9)
    a, b = scheduler(engine, memory, always), scheduler(engine, memory, always)
    errors: list[BaseException] = []

    def run(s: AlertScheduler) -> None:
        try:
            for _ in range(3):
                s.run_once()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    fired = alerts(engine)
    keys = [x.dedup_key for x in fired]
    assert fired and len(keys) == len(set(keys))
    with Session(engine) as s:
        deliveries = s.exec(select(Delivery)).all()
    assert sorted(d.alert_id for d in deliveries) == sorted(x.id for x in fired)
    assert errors == []
