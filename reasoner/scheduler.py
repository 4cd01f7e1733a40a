"""Who gets the model next: a pure scheduling policy, and the worker thread that obeys it.

`SchedulerPolicy` is a plain object (no threads, no clock reads: `now` is passed in), so every
rule is tested with fake jobs and a fake clock:

* **Priority**: rule scoring (alerts) runs before questions.
* **Batching**: queued score requests on the same (camera, window, explain) are merged into one
  engine call, up to `max_batch_rules` rules, so they share one visual prefix.
* **Admission control**: at most `max_queries` questions queued or running and `max_scores`
  score requests queued; beyond that `ReasonerBusy` with a retry hint from the measured service
  times (exponential moving averages), which the API turns into 429 + Retry-After.
* **Fairness**: a question runs as *steps* (plan/fetch/scan batches, prefill, 8 decode tokens;
  `LocalReasoner.query_steps`), and scoring is checked between any two steps, so a long
  question delays an alert by at most one step. The other way round, a question that has waited
  `query_max_wait_s` since its last step gets one step even while scores keep arriving, so a
  flood of alerts slows questions down but never stops them. One question is in progress at a
  time (its KV cache is the big memory user); the others wait in FIFO order.

`EngineService` owns the model through one worker thread and exposes the blocking
`Reasoner` calls (`query`, `score`) that the API's threadpool uses.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from flashwatch.messages import QueryAnswer, QueryRequest, ScoreAnswer, ScoreRequest
from flashwatch.protocols import ReasonerBusy

__all__ = ["EngineService", "QueryJob", "QueryStep", "SchedulerPolicy", "ScoreBatch", "ScoreJob"]

log = logging.getLogger(__name__)
BatchKey = tuple[int, float, float, bool]
T = TypeVar("T")


class StepEngine(Protocol):
    """What the worker drives: `LocalReasoner` satisfies it."""

    def query_steps(self, request: QueryRequest) -> Generator[str, None, QueryAnswer]: ...

    def score(self, request: ScoreRequest) -> ScoreAnswer: ...


@dataclass(eq=False)  # identity: jobs are compared by who they are, not what they ask
class ScoreJob:
    request: ScoreRequest
    enqueued: float
    future: Future[ScoreAnswer] = field(default_factory=Future)

    @property
    def key(self) -> BatchKey:
        w = self.request.window
        return (w.camera_id, w.t_from, w.t_to, self.request.explain)


@dataclass(eq=False)
class QueryJob:
    request: QueryRequest
    enqueued: float
    future: Future[QueryAnswer] = field(default_factory=Future)
    steps: Generator[str, None, QueryAnswer] | None = None  # set once started
    last_step: float | None = None  # when it last got the model (None: never)
    started: float | None = None
    abandoned: bool = False  # the caller timed out: stop at the next step boundary


@dataclass
class ScoreBatch:
    """Run these score jobs as one engine call (same window: rules concatenated in order)."""

    jobs: list[ScoreJob]

    def request(self) -> ScoreRequest:
        first = self.jobs[0].request
        rules = [r for job in self.jobs for r in job.request.rules]
        return ScoreRequest(window=first.window, rules=rules, explain=first.explain)

    def split(self, answer: ScoreAnswer) -> list[ScoreAnswer]:
        """One answer per job, each with its own rules' scores, in its own order."""
        out, i = [], 0
        for job in self.jobs:
            n = len(job.request.rules)
            out.append(
                ScoreAnswer(
                    scores=answer.scores[i : i + n],
                    frames=answer.frames,
                    latency_s=answer.latency_s,
                    timings=answer.timings,
                    tokens_visual=answer.tokens_visual,
                )
            )
            i += n
        return out


@dataclass
class QueryStep:
    """Advance this question by one step (starting it if needed)."""

    job: QueryJob


Decision = ScoreBatch | QueryStep


@dataclass
class SchedulerPolicy:
    """The pure policy; the service calls it under its lock."""

    max_queries: int = 4
    max_scores: int = 256
    max_batch_rules: int = 64
    query_max_wait_s: float = 2.0
    est_query_s: float = 10.0  # moving averages, updated from observed run times
    est_score_s: float = 0.5
    ema: float = 0.3
    scores: deque[ScoreJob] = field(default_factory=deque)
    queries: deque[QueryJob] = field(default_factory=deque)  # [0] is the one in progress

    # -- admission

    def admit_query(self, job: QueryJob) -> None:
        if len(self.queries) >= self.max_queries:
            wait = self.est_query_s * (len(self.queries) - self.max_queries + 1)
            raise ReasonerBusy(
                f"{len(self.queries)} questions already queued or running", max(1.0, wait)
            )
        self.queries.append(job)

    def admit_score(self, job: ScoreJob) -> None:
        if len(self.scores) >= self.max_scores:
            raise ReasonerBusy(
                f"{len(self.scores)} score requests queued",
                max(1.0, self.est_score_s * len(self.scores) / 4),
            )
        self.scores.append(job)

    # -- choice

    def next(self, now: float) -> Decision | None:
        """The next thing to run, removing score jobs it hands out; None when idle."""
        self._forget_cancelled()
        head = self.queries[0] if self.queries else None
        if head is not None and self.scores:
            since = head.last_step if head.last_step is not None else head.enqueued
            if now - since >= self.query_max_wait_s:
                return QueryStep(head)
        if self.scores:
            return self._take_batch()
        return QueryStep(head) if head is not None else None

    def _take_batch(self) -> ScoreBatch:
        first = self.scores.popleft()
        jobs, rules = [first], len(first.request.rules)
        rest: deque[ScoreJob] = deque()
        while self.scores:
            job = self.scores.popleft()
            n = len(job.request.rules)
            if job.key == first.key and rules + n <= self.max_batch_rules:
                jobs.append(job)
                rules += n
            else:
                rest.append(job)
        self.scores = rest
        return ScoreBatch(jobs)

    def _forget_cancelled(self) -> None:
        self.scores = deque(j for j in self.scores if not j.future.cancelled())
        self.queries = deque(
            j for j in self.queries if j.steps is not None or not j.future.cancelled()
        )

    # -- feedback

    def query_stepped(self, job: QueryJob, now: float, finished: bool) -> None:
        job.last_step = now
        if job.started is None:
            job.started = now
        if finished:
            self.drop_query(job)
            took = now - job.started
            self.est_query_s += self.ema * (took - self.est_query_s)

    def drop_query(self, job: QueryJob) -> None:
        if job in self.queries:
            self.queries.remove(job)

    def batch_done(self, took_s: float) -> None:
        self.est_score_s += self.ema * (took_s - self.est_score_s)


class EngineService:
    """Blocking `query`/`score` (the Reasoner protocol) served by one worker thread that owns
    the engine and follows a `SchedulerPolicy`."""

    def __init__(
        self,
        engine: StepEngine,
        policy: SchedulerPolicy | None = None,
        *,
        timeout_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.policy = policy or SchedulerPolicy()
        self.timeout_s = timeout_s
        self.clock = clock
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="reasoner-worker", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop after the current step; queued requests fail with ReasonerBusy."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout_s)
        with self._cond:
            pending: list[ScoreJob | QueryJob] = [*self.policy.scores, *self.policy.queries]
            self.policy.scores.clear()
            self.policy.queries.clear()
        for job in pending:
            if not job.future.done():
                job.future.set_exception(ReasonerBusy("the reasoner is shutting down", 5.0))

    def query(self, request: QueryRequest) -> QueryAnswer:
        job = QueryJob(request, self.clock())
        with self._cond:
            if self._stop:
                raise ReasonerBusy("the reasoner is shutting down", 5.0)
            self.policy.admit_query(job)
            self._cond.notify_all()
        try:
            return self._wait(job.future)
        except TimeoutError:
            job.abandoned = True
            raise

    def score(self, request: ScoreRequest) -> ScoreAnswer:
        job = ScoreJob(request, self.clock())
        with self._cond:
            if self._stop:
                raise ReasonerBusy("the reasoner is shutting down", 5.0)
            self.policy.admit_score(job)
            self._cond.notify_all()
        return self._wait(job.future)

    def _wait(self, future: Future[T]) -> T:
        try:
            return future.result(self.timeout_s)
        except TimeoutError:
            future.cancel()  # a job not started yet is dropped; a running one finishes unused
            raise

    # -- worker

    def _run(self) -> None:
        while True:
            with self._cond:
                decision = self.policy.next(self.clock())
                while decision is None and not self._stop:
                    self._cond.wait()
                    decision = self.policy.next(self.clock())
                if self._stop:
                    return
            assert decision is not None
            if isinstance(decision, ScoreBatch):
                self._score(decision)
            else:
                self._step(decision.job)

    def _score(self, batch: ScoreBatch) -> None:
        live = [j for j in batch.jobs if j.future.set_running_or_notify_cancel()]
        if not live:
            return
        batch = ScoreBatch(live)
        started = self.clock()
        try:
            answers = batch.split(self.engine.score(batch.request()))
        except Exception as exc:  # every job of the batch gets the engine's error
            for job in live:
                job.future.set_exception(exc)
            return
        finally:
            with self._cond:
                self.policy.batch_done(self.clock() - started)
        for job, answer in zip(live, answers, strict=True):
            job.future.set_result(answer)

    def _step(self, job: QueryJob) -> None:
        if job.steps is None:
            if not job.future.set_running_or_notify_cancel():  # caller gave up before start
                with self._cond:
                    self.policy.drop_query(job)
                return
            job.steps = self.engine.query_steps(job.request)
        if job.abandoned:  # nobody waits for the answer: free the model and the KV cache
            job.steps.close()
            self._stepped(job, finished=True)
            job.future.set_exception(TimeoutError("abandoned by the caller"))
            return
        try:
            next(job.steps)
        except StopIteration as done:
            self._stepped(job, finished=True)
            job.future.set_result(done.value)
        except Exception as exc:
            self._stepped(job, finished=True)
            job.future.set_exception(exc)
        else:
            self._stepped(job, finished=False)

    def _stepped(self, job: QueryJob, *, finished: bool) -> None:
        with self._cond:
            self.policy.query_stepped(job, self.clock(), finished)
