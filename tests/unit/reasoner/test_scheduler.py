"""Scheduler policy with fake jobs and a fake clock; the worker service with a fake engine."""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor

import pytest

from flashwatch.messages import (
    CameraWindow,
    QueryAnswer,
    QueryRequest,
    RuleQuestion,
    RuleScore,
    ScoreAnswer,
    ScoreRequest,
)
from flashwatch.protocols import Reasoner, ReasonerBusy
from reasoner.planning import NoFootage
from reasoner.scheduler import (
    EngineService,
    QueryJob,
    QueryStep,
    SchedulerPolicy,
    ScoreBatch,
    ScoreJob,
)


def sreq(cam: int = 1, t: float = 100.0, rules: tuple[int, ...] = (1,)) -> ScoreRequest:
    return ScoreRequest(
        window=CameraWindow(camera_id=cam, t_from=t, t_to=t + 64),
        rules=[RuleQuestion(rule_id=r, text=f"rule {r}") for r in rules],
    )


def qreq(text: str = "what?") -> QueryRequest:
    return QueryRequest(question=text, windows=[CameraWindow(camera_id=1, t_from=0, t_to=60)])


# ------------------------------------------------------------------ pure policy


def test_scores_run_before_queries() -> None:
    p = SchedulerPolicy()
    p.admit_query(QueryJob(qreq(), 0.0))
    p.admit_score(ScoreJob(sreq(), 0.5))
    first = p.next(1.0)
    assert isinstance(first, ScoreBatch)
    assert isinstance(p.next(1.0), QueryStep)
    assert SchedulerPolicy().next(0.0) is None


def test_batches_rules_of_the_same_window_in_order() -> None:
    p = SchedulerPolicy(max_batch_rules=5)
    a, b = ScoreJob(sreq(rules=(1, 2)), 0), ScoreJob(sreq(cam=2), 0)
    c, d = ScoreJob(sreq(rules=(3,)), 0), ScoreJob(sreq(rules=(4, 5, 6)), 0)
    for job in (a, b, c, d):
        p.admit_score(job)
    batch = p.next(0.0)
    assert isinstance(batch, ScoreBatch) and batch.jobs == [a, c]  # d would exceed 5 rules
    merged = batch.request()
    assert [r.rule_id for r in merged.rules] == [1, 2, 3]
    answer = ScoreAnswer(scores=[RuleScore(rule_id=i, p_yes=i / 10) for i in (1, 2, 3)], frames=64)
    split = batch.split(answer)
    assert [[s.rule_id for s in x.scores] for x in split] == [[1, 2], [3]]
    assert all(x.frames == 64 for x in split)
    later = [p.next(0.0), p.next(0.0)]
    assert [x.jobs for x in later if isinstance(x, ScoreBatch)] == [[b], [d]]


def test_explain_requests_are_batched_separately() -> None:
    p = SchedulerPolicy()
    plain, explained = ScoreJob(sreq(), 0), ScoreJob(sreq(), 0)
    explained.request.explain = True
    p.admit_score(plain)
    p.admit_score(explained)
    first = p.next(0)
    assert isinstance(first, ScoreBatch) and first.jobs == [plain]


def test_admission_control_with_retry_hint() -> None:
    p = SchedulerPolicy(max_queries=2, max_scores=2, est_query_s=7.0)
    p.admit_query(QueryJob(qreq(), 0))
    p.admit_query(QueryJob(qreq(), 0))
    with pytest.raises(ReasonerBusy) as busy:
        p.admit_query(QueryJob(qreq(), 0))
    assert busy.value.retry_after_s == pytest.approx(7.0)
    p.admit_score(ScoreJob(sreq(), 0))
    p.admit_score(ScoreJob(sreq(), 0))
    with pytest.raises(ReasonerBusy) as busy:
        p.admit_score(ScoreJob(sreq(), 0))
    assert busy.value.retry_after_s >= 1.0


def test_waiting_query_gets_a_step_under_a_flood_of_scores() -> None:
    p = SchedulerPolicy(query_max_wait_s=2.0)
    q = QueryJob(qreq(), 0.0)
    p.admit_query(q)
    for i in range(10):
        p.admit_score(ScoreJob(sreq(cam=i), 0.0))
    assert isinstance(p.next(1.0), ScoreBatch)  # waited 1 s < 2 s: scores first
    step = p.next(2.5)
    assert isinstance(step, QueryStep) and step.job is q
    p.query_stepped(q, 2.6, finished=False)
    assert isinstance(p.next(3.0), ScoreBatch)  # its last step was 0.4 s ago
    assert isinstance(p.next(4.7), QueryStep)


def test_one_query_in_progress_fifo_and_service_time_estimate() -> None:
    p = SchedulerPolicy(est_query_s=10.0, ema=0.5)
    a, b = QueryJob(qreq("a"), 0), QueryJob(qreq("b"), 0)
    p.admit_query(a)
    p.admit_query(b)
    for t in (1.0, 2.0):
        step = p.next(t)
        assert isinstance(step, QueryStep) and step.job is a
        p.query_stepped(a, t, finished=t == 2.0)
    step = p.next(3.0)
    assert isinstance(step, QueryStep) and step.job is b
    assert p.est_query_s == pytest.approx(10 + 0.5 * (1.0 - 10))  # a took 1 s (1.0 -> 2.0)


def test_cancelled_jobs_are_skipped() -> None:
    p = SchedulerPolicy()
    s, q = ScoreJob(sreq(), 0), QueryJob(qreq(), 0)
    p.admit_score(s)
    p.admit_query(q)
    s.future.cancel()
    q.future.cancel()
    assert p.next(0.0) is None
    assert not p.queries and not p.scores


# ------------------------------------------------------------------ worker service


class FakeEngine:
    """Records what ran; a query takes `steps` steps, each waiting for `gate` if set."""

    def __init__(self, steps: int = 3) -> None:
        self.log: list[str] = []
        self.steps = steps
        self.gate: threading.Event | None = None
        self.in_step = threading.Event()
        self.score_calls: list[list[int]] = []

    def query_steps(self, request: QueryRequest) -> Generator[str, None, QueryAnswer]:
        if request.question == "missing":
            raise NoFootage(1, 0, 60)
        for i in range(self.steps):
            self.log.append(f"{request.question}:{i}")
            self.in_step.set()
            if self.gate is not None:
                assert self.gate.wait(5)
            yield "step"
        return QueryAnswer(answer=request.question.upper())

    def score(self, request: ScoreRequest) -> ScoreAnswer:
        ids = [r.rule_id for r in request.rules]
        self.score_calls.append(ids)
        self.log.append(f"score:{ids}")
        return ScoreAnswer(scores=[RuleScore(rule_id=i, p_yes=0.5) for i in ids], frames=4)


def test_service_is_a_reasoner_and_returns_results() -> None:
    svc = EngineService(FakeEngine())
    try:
        assert isinstance(svc, Reasoner)
        assert svc.query(qreq("hi")).answer == "HI"
        got = svc.score(sreq(rules=(4, 5)))
        assert [s.rule_id for s in got.scores] == [4, 5]
        with pytest.raises(NoFootage):
            svc.query(qreq("missing"))
    finally:
        svc.close()


def test_scoring_runs_between_the_steps_of_a_long_query() -> None:
    eng = FakeEngine(steps=4)
    eng.gate = threading.Event()
    svc = EngineService(eng)
    try:
        with ThreadPoolExecutor(8) as pool:
            long = pool.submit(svc.query, qreq("long"))
            assert eng.in_step.wait(5)  # the query holds the model in its first step
            scores = [pool.submit(svc.score, sreq(rules=(i,))) for i in (1, 2, 3)]
            deadline = time.monotonic() + 5
            while len(svc.policy.scores) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)  # all three queued while step 0 runs
            eng.gate.set()
            assert [f.result(5).scores[0].rule_id for f in scores] == [1, 2, 3]
            assert long.result(5).answer == "LONG"
        # one batched engine call, right after the step that was running
        assert eng.log[:2] == ["long:0", "score:[1, 2, 3]"]
        assert eng.log[2:] == ["long:1", "long:2", "long:3"]
    finally:
        svc.close()


def test_busy_when_the_query_queue_is_full() -> None:
    eng = FakeEngine(steps=2)
    eng.gate = threading.Event()
    svc = EngineService(eng, SchedulerPolicy(max_queries=1, est_query_s=3.0))
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(svc.query, qreq("a"))
            assert eng.in_step.wait(5)
            with pytest.raises(ReasonerBusy) as busy:
                svc.query(qreq("b"))
            assert busy.value.retry_after_s == pytest.approx(3.0)
            scored = pool.submit(svc.score, sreq())  # scoring is still admitted and served
            eng.gate.set()
            assert scored.result(5).scores
            assert first.result(5).answer == "A"
    finally:
        svc.close()


def test_timeout_and_close() -> None:
    eng = FakeEngine(steps=1)
    eng.gate = threading.Event()
    svc = EngineService(eng, timeout_s=0.2)
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(svc.query, qreq("a"))
        assert eng.in_step.wait(5)
        with pytest.raises(TimeoutError):
            svc.score(sreq())  # queued behind the stuck step, gives up
        time.sleep(0.3)  # the query's own 0.2 s have certainly passed too
        eng.gate.set()
        with pytest.raises(TimeoutError):
            running.result(5)  # the caller's own timeout (0.2 s) had passed
    svc.close()
    with pytest.raises(ReasonerBusy):
        svc.score(sreq())


def test_abandoned_query_stops_at_the_next_step() -> None:
    eng = FakeEngine(steps=5)
    eng.gate = threading.Event()
    svc = EngineService(eng, timeout_s=0.2)
    try:
        with pytest.raises(TimeoutError):
            svc.query(qreq("slow"))
        eng.gate.set()
        eng.gate = None
        assert svc.score(sreq()).scores  # the worker moved on
        deadline = time.monotonic() + 5
        while svc.policy.queries and time.monotonic() < deadline:
            time.sleep(0.01)  # the abandoned query is closed at its next turn
        assert not svc.policy.queries
        assert eng.log == ["slow:0", "score:[1]"]
    finally:
        svc.close()
