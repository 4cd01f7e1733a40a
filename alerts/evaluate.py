"""Evaluate one camera window for every rule due on it: footage check, ONE batched reasoner
call, hysteresis/cooldown, and, for rules that fire, a second call asking for the reason.

Shared by the live scheduler and the backfill runner; it reads memory and calls the reasoner
but never writes the registry, so the caller decides how the outcome is persisted.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from alerts.metrics import AlertMetrics
from alerts.policy import (
    RuleState,
    clip_span_s,
    clips_in_window,
    coverage_fraction,
    decide,
    is_active,
    passing_span,
    push_history,
)
from alerts.store import AlertDraft, StateUpdate
from flashwatch.db.models import Camera, Rule
from flashwatch.messages import CameraWindow, RuleQuestion, RuleScore, ScoreRequest
from flashwatch.protocols import Reasoner, ReasonerBusy
from memory.store import MemoryStore


@dataclass(frozen=True)
class EvalConfig:
    min_coverage: float = 0.9
    """Share of a window that level-0 clips must cover; below it the window is skipped."""
    max_evidence: int = 16
    """Evidence timestamps kept per alert (evenly spread over the passing span)."""


@dataclass
class WindowOutcome:
    updates: list[StateUpdate] = field(default_factory=list)
    drafts: list[AlertDraft] = field(default_factory=list)
    scored: bool = False
    skipped: str | None = None


def _spread(values: Sequence[float], n: int) -> list[float]:
    if len(values) <= n:
        return list(values)
    return [values[round(i * (len(values) - 1) / (n - 1))] for i in range(n)] if n > 1 else []


class WindowEvaluator:
    def __init__(
        self,
        memory: MemoryStore,
        reasoner: Reasoner,
        metrics: AlertMetrics,
        config: EvalConfig | None = None,
    ) -> None:
        self.memory = memory
        self.reasoner = reasoner
        self.metrics = metrics
        self.config = config or EvalConfig()

    def evaluate(
        self,
        camera: Camera,
        start: float,
        end: float,
        rules: Sequence[Rule],
        states: dict[int, RuleState],
        *,
        backfilled: bool = False,
        defer_text: bool = False,
    ) -> WindowOutcome:
        """Score `rules` on [start, end) of `camera`. May raise ReasonerBusy (nothing done).

        Reasons (and report answers the score call did not generate) cost a generation per
        rule. `defer_text` leaves them out, marking the drafts `needs_text`, so the live
        scheduler can post the alert first and ask for the text when it has nothing more
        urgent to do; backfill asks inline.
        """
        assert camera.id is not None
        out = WindowOutcome()
        active = [r for r in rules if is_active(r.active_hours, camera.timezone, end)]
        for rule in rules:
            if rule not in active:
                out.updates.append(skip_update(rule, camera, states, end, "outside active hours"))
        if not active:
            out.skipped = "outside active hours"
            return out
        span = clip_span_s(camera.sample_interval_s)
        clips = self.memory.range(camera.id, 0, start - span, end)
        overlapping = [c.t[0] for c in clips]
        starts = clips_in_window(overlapping, start, end, camera.sample_interval_s)
        # Coverage counts every clip overlapping the window, not only those scored on it:
        # clips start on the camera's own 4-frame grid, so with a phase other than 0 or
        # span/2 against the step grid, the scored clips alone leave up to half a clip
        # uncovered at an edge (a 2.2 s phase: 77 % of an 8 s window), and every window of
        # that camera would be skipped as missing footage forever.
        frac = coverage_fraction(overlapping, start, end, camera.sample_interval_s)
        if frac < self.config.min_coverage:
            reason = f"missing footage: {frac:.0%} of the window covered"
            out.updates += [skip_update(r, camera, states, end, reason) for r in active]
            out.skipped = reason
            self.metrics.windows_skipped.labels(reason="missing_footage").inc(len(active))
            return out
        window = CameraWindow(camera_id=camera.id, camera_name=camera.name, t_from=start, t_to=end)
        questions = [RuleQuestion(rule_id=r.id or 0, text=r.text, mode=_mode(r)) for r in active]
        t0 = time.perf_counter()
        answer = self.reasoner.score(ScoreRequest(window=window, rules=questions))
        self.metrics.eval_latency.observe(time.perf_counter() - t0)
        self.metrics.evaluations.inc(len(active))
        out.scored = True
        scores = {s.rule_id: s for s in answer.scores}
        texts: list[tuple[Rule, RuleScore, tuple[float, float]]] = []
        for rule in active:
            assert rule.id is not None
            score = scores.get(rule.id)
            if score is None:  # the reasoner left it out: retry this window next time
                continue
            self.metrics.p_yes.labels(rule=str(rule.id)).observe(score.p_yes)
            prev = states.get(rule.id, RuleState())
            if rule.mode == "report":
                st = RuleState(last_end=end, history=(), cooldown_until=prev.cooldown_until)
                out.updates.append(StateUpdate(rule.id, camera.id, st, p_yes=score.p_yes))
                texts.append((rule, score, (start, end)))
                continue
            d = decide(
                prev, window_end=end, p_yes=score.p_yes, threshold=rule.threshold,
                k=rule.hysteresis_k, n=rule.hysteresis_n, cooldown_s=rule.cooldown_s,
            )  # fmt: skip
            out.updates.append(StateUpdate(rule.id, camera.id, d.state, p_yes=score.p_yes))
            if d.fire:
                texts.append((rule, score, self._evidence_span(prev, rule, end)))
        if not texts:
            return out
        # Reasons for firing rules, and report answers the first call did not generate, in
        # one more call: generation is paid only when something is posted.
        need = [r for r, sc, _ in texts if r.mode != "report" or not sc.answer]
        reasons = self.reasons(window, need) if need and not defer_text else {}
        for rule, score, (lo, hi) in texts:
            assert rule.id is not None
            kind = "report" if rule.mode == "report" else "alert"
            text = reasons.get(rule.id, "") or (score.answer if kind == "report" else "")
            picked = [t for t in score.evidence if start - 1e-6 <= t <= end]
            evidence = sorted(picked) or [t for t in starts if lo - 1e-6 <= t <= hi] or starts[-1:]
            evidence = _spread(evidence, self.config.max_evidence)
            best = picked[0] if picked else (evidence[len(evidence) // 2] if evidence else None)
            out.drafts.append(
                AlertDraft(rule, camera, kind, start, end, score.p_yes, reason=text,
                           evidence=evidence, backfilled=backfilled,
                           thumbnail=self._thumb(camera.id, best) if kind == "alert" else None,
                           needs_text=defer_text and rule in need)
            )  # fmt: skip
        return out

    @staticmethod
    def _evidence_span(prev: RuleState, rule: Rule, end: float) -> tuple[float, float]:
        """Where the event lies: the time shared by the windows that passed (assuming they
        were consecutive steps, which they are unless footage went missing)."""
        history = push_history(prev.history, True, rule.hysteresis_n)
        ends = [end - i * rule.step_s for i, ok in enumerate(reversed(history)) if ok]
        return passing_span(ends, rule.window_s)

    def reasons(self, window: CameraWindow, rules: Sequence[Rule]) -> dict[int, str]:
        """Ask for a short explanation, only for rules that fire (it costs generation).
        A failure here must not lose the alert: it fires without a reason. ReasonerBusy is
        passed on so the caller can come back later."""
        questions = [RuleQuestion(rule_id=r.id or 0, text=r.text, mode=_mode(r)) for r in rules]
        try:
            ans = self.reasoner.score(ScoreRequest(window=window, rules=questions, explain=True))
        except ReasonerBusy:
            raise
        except Exception:
            self.metrics.explain_failures.inc()
            return {}
        return {s.rule_id: s.answer for s in ans.scores}

    def _thumb(self, camera_id: int, t0: float | None) -> bytes | None:
        """Thumbnail of the best clip: the one the reasoner attended to most, else the middle
        of the span all passing windows share."""
        if t0 is None:
            return None
        clip = self.memory.get(camera_id, 0, t0, thumbs=True)
        return None if clip is None else clip.thumb


def skip_update(
    rule: Rule, camera: Camera, states: dict[int, RuleState], end: float, why: str
) -> StateUpdate:
    """Advance past a window without touching the pass/fail history: a gap is neither."""
    assert rule.id is not None and camera.id is not None
    prev = states.get(rule.id, RuleState())
    st = RuleState(end, prev.history, prev.last_fired_end, prev.cooldown_until)
    return StateUpdate(rule.id, camera.id, st, skip_reason=why)


def _mode(rule: Rule) -> Literal["alert", "report"]:
    return "report" if rule.mode == "report" else "alert"
