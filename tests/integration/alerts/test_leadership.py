"""Alerts leadership on a real PostgreSQL: advisory-lock shards split between replicas with no
overlap, move to the survivor when a replica's lock connection dies, and two schedulers on the
same registry evaluate every window exactly once (real Redis memory, scripted reasoner)."""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import Engine

from alerts.leadership import PgShardLeadership, open_leadership, shard_of
from alerts.metrics import AlertMetrics
from alerts.scheduler import AlertScheduler, SchedulerConfig
from flashwatch.db.engine import create_db_engine, upgrade
from memory.redis_store import RedisStore
from tests import services
from tests.integration.alerts.helpers import (
    T0,
    ScriptedReasoner,
    add_camera,
    add_rule,
    alerts,
    feed,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.integration
POLL = 0.2
CAMS = [910_001 + i for i in range(8)]  # shards (of 4): 0 1 0 2 0 1 1 2 (3: no camera)


@pytest.fixture
def engine(pg_server_url: str) -> Iterator[Engine]:
    name = f"fw_lead_{secrets.token_hex(4)}"
    eng = create_db_engine(services.create_pg_database(pg_server_url, name))
    upgrade(eng)
    yield eng
    eng.dispose()
    services.drop_pg_database(pg_server_url, name)


@pytest.fixture
def make_leader(engine: Engine) -> Iterator[Callable[..., PgShardLeadership]]:
    made: list[PgShardLeadership] = []

    def make(shards: int, poll_s: float = POLL) -> PgShardLeadership:
        lead = open_leadership(
            engine, shards, poll_s=poll_s, metrics=AlertMetrics(CollectorRegistry())
        )
        assert isinstance(lead, PgShardLeadership)
        made.append(lead)
        return lead

    yield make
    for lead in made:
        lead.stop()


def settle(leaders: list[PgShardLeadership], rounds: int = 4) -> None:
    """Poll every replica in turn (no threads): deterministic convergence."""
    for _ in range(rounds):
        for lead in leaders:
            lead.poll_once()


def assert_partition(leaders: list[PgShardLeadership], shards: int) -> None:
    owned = [lead.owned() for lead in leaders]
    assert sum(len(o) for o in owned) == shards, owned  # no overlap ...
    assert frozenset().union(*owned) == frozenset(range(shards)), owned  # ... and all covered


@pytest.mark.parametrize(("replicas", "shards"), [(2, 8), (3, 8), (2, 1), (4, 3)])
def test_replicas_split_shards_fairly_without_overlap(
    make_leader: Callable[..., PgShardLeadership], replicas: int, shards: int
) -> None:
    leaders = [make_leader(shards) for _ in range(replicas)]
    leaders[0].poll_once()
    assert leaders[0].owned() == frozenset(range(shards))  # alone: everything
    settle(leaders)
    assert_partition(leaders, shards)
    fair = -(-shards // replicas)
    assert all(len(lead.owned()) <= fair for lead in leaders)
    assert all(lead.members == replicas for lead in leaders)
    gauge = [lead.metrics.owned_shards._value.get() for lead in leaders]
    assert gauge == [len(lead.owned()) for lead in leaders]


def test_lost_connection_hands_shards_to_the_survivor(
    engine: Engine, make_leader: Callable[..., PgShardLeadership]
) -> None:
    # b polls on its own thread every POLL; a is driven by hand (long lease) so the test
    # decides when it notices its loss.
    a, b = make_leader(8, poll_s=60.0), make_leader(8)
    a.poll_once()
    assert a.owned() == frozenset(range(8))
    b.start()
    assert b.owned() == frozenset() and b.members == 2  # all taken: b waits for its share
    a.poll_once()  # a sees two members and releases its excess
    assert len(a.owned()) == 4
    # b picks the released shards up; at no instant do both own a shard.
    overlap: list[frozenset[int]] = []
    t0 = time.monotonic()
    while len(b.owned()) < 4:
        overlap += [a.owned() & b.owned()] if a.owned() & b.owned() else []
        time.sleep(0.005)
        assert time.monotonic() - t0 < 10 * POLL, b.owned()
    assert overlap == []
    assert_partition([a, b], 8)

    with engine.connect() as conn:  # what a dropped network / killed session looks like
        conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": a.backend_pid()})
    took = wait_for(lambda: b.owned() == frozenset(range(8)), 5.0)
    assert took < 5 * POLL + 1.0  # within a couple of poll intervals
    # The victim stops scheduling at its next poll (before it, it still believes it owns its
    # shards: the documented window that commit_window's unique keys cover) ...
    a.poll_once()
    assert a.owned() == frozenset() and not any(a.owns_camera(c) for c in range(100))
    assert a.metrics.shard_changes.labels(change="lost")._value.get() == 4
    assert a.metrics.owned_shards._value.get() == 0
    # ... then reconnects, rejoins, and gets its fair share back from b.
    wait_for(lambda: (a.poll_once(), len(a.owned()) == 4)[1], 5.0)
    assert_partition([a, b], 8)
    assert b.metrics.shard_changes.labels(change="acquired")._value.get() == 8
    assert b.metrics.shard_changes.labels(change="released")._value.get() == 4

    a.stop()  # a clean stop gives everything back at once
    wait_for(lambda: b.owned() == frozenset(range(8)), 5 * POLL + 1.0)


def test_a_clean_stop_hands_over_at_the_standbys_next_poll(
    make_leader: Callable[..., PgShardLeadership],
) -> None:
    # Closing the socket alone frees the locks only when the server's backend notices, a
    # moment later: a standby polling at once still saw them taken (1 run in 40 of the
    # two-scheduler test below) and waited a whole poll_s. Repeated: the race was rare.
    for _ in range(10):
        a, b = make_leader(4, poll_s=60.0), make_leader(4, poll_s=60.0)
        settle([a, b])
        assert_partition([a, b], 4)
        a.stop()
        b.poll_once()
        assert b.owned() == frozenset(range(4)) and b.members == 1
        b.stop()


def test_ownership_lapses_without_a_successful_poll(
    make_leader: Callable[..., PgShardLeadership],
) -> None:
    lead = make_leader(2)
    lead.poll_once()
    assert lead.owned() == frozenset({0, 1}) and lead.owns_camera(1)
    time.sleep(lead.lease_s + 0.1)  # no poll for the lease: e.g. stuck on a dead network
    assert lead.owned() == frozenset() and not lead.owns_camera(1)
    with lead.guard(1) as mine:
        assert not mine


# -- two schedulers -----------------------------------------------------------------------


@pytest.fixture
def memory(redis_url: str) -> Iterator[RedisStore]:
    store = RedisStore(redis_url, [1e6], namespace=f"fwtest-lead-{secrets.token_hex(4)}")
    yield store
    for cam in CAMS:
        store.delete_camera(cam)
    store.close()


def make_scheduler(
    engine: Engine, memory: RedisStore, reasoner: ScriptedReasoner, lead: PgShardLeadership
) -> AlertScheduler:
    return AlertScheduler(
        engine, memory, reasoner, config=SchedulerConfig(max_catchup=50),
        metrics=lead.metrics, clock=lambda: T0 + 100, leadership=lead,
    )  # fmt: skip


def run_both(*scheds: AlertScheduler) -> None:
    """One pass of each scheduler, concurrently (two replicas on the same registry)."""
    errors: list[BaseException] = []

    def one(s: AlertScheduler) -> None:
        try:
            while s.run_once():
                pass
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(s,)) for s in scheds]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


def windows(reasoner: ScriptedReasoner) -> list[tuple[int, float]]:
    return [(c.window.camera_id, c.window.t_to) for c in reasoner.score_calls()]


def diagnose(engine: Engine, seen: Counter[tuple[int, float]], expected: set) -> str:
    """What the registry says about windows missed or scored twice (for an intermittent
    failure: skip reasons tell a skipped window from one never reached)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT camera_id, last_end, evaluations, skipped, last_skip_end, "
                "last_skip_reason FROM alert_rule_state ORDER BY camera_id"
            )
        ).all()
    missing = sorted((c, e - T0) for c, e in expected - set(seen))
    twice = sorted((c, e - T0) for c, e in seen.elements() if seen[(c, e)] > 1)
    extra = sorted((c, e - T0) for c, e in set(seen) - expected)
    states = [(r[0], r[1] - T0 if r[1] else None, *r[2:4], r[4] - T0 if r[4] else None, r[5])
              for r in rows]  # fmt: skip
    return f"missing {missing} twice {twice} extra {extra} states {states}"


# Failed once in a full CI run (2026-11-26): the window ending at T0+32 was never scored on
# any camera (24, 40, 48, 56 were, none twice); it passes alone and with its file (10 runs).
# Cause not found yet — it may be a real skipped-window bug, so look at alert_rule_state's
# skip reasons when it fails. Run 180 times alone (some under load) and 46 times with its
# directory (2026-12-06): one other failure, b not owning every shard right after a.stop()
# (a stop freed its locks only when the server noticed the closed socket; fixed, and tested
# above); window 32 never missed. 40 more runs alone while a two-thread training run kept
# both cores busy (2026-12-07): all passed. Window 32 is the only one whose clips come from
# both feeds (16-24 before the first pass, 24-32 after it); its skip reason would say
# whether its older clips were missing ("missing footage") when it was due.
@pytest.mark.unstable
def test_two_schedulers_evaluate_each_window_exactly_once(
    engine: Engine, memory: RedisStore, make_leader: Callable[..., PgShardLeadership]
) -> None:
    shards = 4
    for cam in CAMS:
        add_camera(engine, cam)
    add_rule(engine, "always", CAMS, hysteresis_k=1, hysteresis_n=1)  # fires every window
    a, b = make_leader(shards, poll_s=60.0), make_leader(shards, poll_s=60.0)
    settle([a, b])
    assert_partition([a, b], shards)
    ra = ScriptedReasoner(lambda _r, _e: 0.95)
    rb = ScriptedReasoner(lambda _r, _e: 0.95)
    sa_, sb = make_scheduler(engine, memory, ra, a), make_scheduler(engine, memory, rb, b)

    for cam in CAMS:
        feed(memory, cam, T0, T0 + 24)
    run_both(sa_, sb)
    for cam in CAMS:
        feed(memory, cam, T0 + 24, T0 + 56)
    run_both(sa_, sb)

    # Each replica scored only cameras of its own shards ...
    assert {shard_of(c, shards) for c, _ in windows(ra)} <= a.owned()
    assert {shard_of(c, shards) for c, _ in windows(rb)} <= b.owned()
    assert windows(ra) and windows(rb)
    # ... and every (camera, window) was scored exactly once overall.
    expected = {(c, T0 + end) for c in CAMS for end in (24, 32, 40, 48, 56)}
    seen = Counter(windows(ra) + windows(rb))
    assert set(seen) == expected and max(seen.values()) == 1, diagnose(engine, seen, expected)
    fired = alerts(engine)
    assert len(fired) == len(expected)
    assert len({x.dedup_key for x in fired}) == len(fired)
    both = [s.metrics.fired.labels(kind="alert", backfilled="false")._value.get()
            for s in (sa_, sb)]  # fmt: skip
    assert sum(both) == len(fired)  # no commit lost to the unique-key fallback

    # Replica a goes away: b takes its shards and resumes a's cameras where a left off.
    scored_by_a = len(windows(ra))
    a.stop()
    b.poll_once()
    assert b.owned() == frozenset(range(shards))
    for cam in CAMS:
        feed(memory, cam, T0 + 56, T0 + 72)
    run_both(sa_, sb)
    assert len(windows(ra)) == scored_by_a  # a scored nothing more
    expected |= {(c, T0 + end) for c in CAMS for end in (64, 72)}
    seen = Counter(windows(ra) + windows(rb))
    assert set(seen) == expected and max(seen.values()) == 1
    assert len(alerts(engine)) == len(expected)


# -- delivery: any number of workers ------------------------------------------------------


def test_two_delivery_workers_send_each_outbox_row_once(engine: Engine) -> None:
    """Delivery needs no leader: claims are `FOR UPDATE SKIP LOCKED` plus a conditional
    UPDATE on the attempt count, so racing workers split the outbox."""
    from sqlmodel import Session, select

    from alerts.delivery import DeliveryConfig, DeliveryWorker
    from alerts.sinks import WebhookSink
    from flashwatch.db.models import AlertDelivery
    from tests.integration.alerts.helpers import SECRET, WebhookReceiver, fire

    receiver = WebhookReceiver()
    try:
        add_camera(engine, CAMS[0])
        sinks = [{"type": "webhook", "url": receiver.url}]
        rule = add_rule(engine, "fence", [CAMS[0]], sinks=sinks)
        keys = {fire(engine, rule, CAMS[0], T0 + 16 + 8 * i).dedup_key for i in range(40)}
        workers = [
            DeliveryWorker(
                engine,
                {"webhook": WebhookSink(SECRET)},
                config=DeliveryConfig(batch=4, concurrency=2),
                metrics=AlertMetrics(CollectorRegistry()),
            )
            for _ in range(2)
        ]
        counts = [0, 0]

        def drain(i: int) -> None:
            while n := workers[i].run_once():
                counts[i] += n

        threads = [threading.Thread(target=drain, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for w in workers:
            w.stop()
        assert sorted(receiver.keys()) == sorted(keys)  # each row sent exactly once
        assert sum(counts) == 40
        with Session(engine) as s:
            rows = s.exec(select(AlertDelivery)).all()
        assert {(r.status, r.attempts) for r in rows} == {("delivered", 1)}
    finally:
        receiver.down()
