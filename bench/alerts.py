"""Alerts benchmark (issue 7). Prints one JSON object with two parts.

1. `rules`: reasoner cost of scoring R rules on ONE camera window (64 s, 16 level-0 clips) in one
   batched call (shared prefix), for R = 1, 10, 50, with a random mid-size checkpoint on the CPU
   (`reasoner.testing.write_tiny_checkpoint` with --hidden/--layers). Reports evaluations/s, the
   marginal cost per extra rule, and the ratio against scoring the same 10 rules one call each
   (measured in the same process: machines are noisy, ratios are not).
2. `latency`: embedded mode (SQLite registry + SQLite memory), N cameras × R rules, level-0 clips
   written in real time as they complete (4 s each), one scripted event per camera, scheduler +
   delivery worker threads and a real HTTP webhook receiver on loopback. Latency = webhook
   received − event end (negative: the alert arrived before the event was over). With
   --model-cost the scripted reasoner also runs the random model on every call, so the timing
   includes real scoring cost while P(yes) stays scripted (a random model says nothing useful).
   Target: p95 ≤ step + 3 s for 8 cameras × 5 rules on the 2-core machine.

    python bench/alerts.py                         # both parts, defaults
    python bench/alerts.py --skip-rules --cameras 8 --rules 5 --duration 90 --model-cost
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alerts import AlertMetrics, AlertScheduler, DeliveryConfig, DeliveryWorker, SchedulerConfig
from alerts.sinks import WebhookSink
from flashwatch.config import ReasonerConfig
from flashwatch.db.engine import create_db_engine, upgrade
from flashwatch.messages import CameraWindow, RuleQuestion, ScoreAnswer, ScoreRequest
from memory.sqlite_store import SqliteStore
from memory.testing import make_clip
from tests.integration.alerts.helpers import SECRET, ScriptedReasoner, WebhookReceiver
from tests.integration.alerts.helpers import add_camera as _add_camera
from tests.integration.alerts.helpers import add_rule as _add_rule

T0 = 1_700_000_000.0


def fill(store: SqliteStore, cam: int, t_from: float, t_to: float, seed: int = 0) -> None:
    t, clips = t_from, []
    while t + 4 <= t_to + 1e-9:
        clips.append(make_clip(cam, 0, t, seed=seed + len(clips), thumb=b"jpeg"))
        t += 4
    store.put_many(clips)


def load_model(tmp: Path, store: SqliteStore, hidden: int, layers: int) -> Any:
    from reasoner.engine import LocalReasoner
    from reasoner.testing import write_tiny_checkpoint

    heads = max(2, hidden // 64)
    ck = write_tiny_checkpoint(
        tmp / "ck", hidden_size=hidden, num_layers=layers, heads=heads,
        kv_heads=max(1, heads // 4), intermediate_size=hidden * 11 // 4,
        drop=("uniform", [layers // 2], [1.0, 0.5]),
    )  # fmt: skip
    return LocalReasoner.from_config(ReasonerConfig(model_dir=ck, dtype="fp32"), store)


def bench_rules(model: Any, repeats: int) -> dict[str, Any]:
    window = CameraWindow(camera_id=1, camera_name="bench", t_from=T0, t_to=T0 + 64)

    def request(n: int, offset: int = 0) -> ScoreRequest:
        rules = [
            RuleQuestion(rule_id=offset + i + 1, text=f"a person does thing number {offset + i}")
            for i in range(n)
        ]
        return ScoreRequest(window=window, rules=rules)

    def timed(fn: Any) -> float:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    model.score(request(1))  # warm up
    out: dict[str, Any] = {}
    for n in (1, 10, 50):
        s = timed(lambda n=n: model.score(request(n)))
        out[f"rules_{n}"] = {"seconds_per_call": round(s, 4), "evaluations_per_s": round(n / s, 2)}
    one_each = timed(lambda: [model.score(request(1, i)) for i in range(10)])
    t1, t50 = out["rules_1"]["seconds_per_call"], out["rules_50"]["seconds_per_call"]
    out["marginal_s_per_rule"] = round((t50 - t1) / 49, 5)
    out["ten_rules_one_call_each_s"] = round(one_each, 4)
    out["shared_prefix_speedup_10_rules"] = round(one_each / out["rules_10"]["seconds_per_call"], 2)
    return out


class EventReasoner(ScriptedReasoner):
    """P(yes) 0.95 for windows overlapping the camera's scripted event, else 0.05; optionally
    runs a real model first so the call costs what scoring really costs."""

    def __init__(self, events: dict[int, tuple[float, float]], model: Any | None) -> None:
        super().__init__(lambda _r, _e: 0.0)
        self.events, self.model = events, model

    def score(self, request: ScoreRequest) -> ScoreAnswer:
        if self.model is not None:
            self.model.score(request)
        w = request.window
        ev = self.events.get(w.camera_id)
        hit = ev is not None and w.t_from < ev[1] and w.t_to > ev[0]
        self.script = lambda _r, _e: 0.95 if hit else 0.05
        return super().score(request)


def bench_latency(args: argparse.Namespace, tmp: Path, model: Any | None) -> dict[str, Any]:
    engine = create_db_engine(f"sqlite:///{tmp / 'registry.db'}")
    upgrade(engine)
    store = model.store if model is not None else SqliteStore(tmp / "mem.sqlite3", [6])
    recv = WebhookReceiver()
    cams = list(range(101, 101 + args.cameras))
    for cam in cams:
        _add_camera(engine, cam)
    for r in range(args.rules):
        _add_rule(
            engine,
            f"rule-{r}",
            cams,
            window_s=args.window,
            step_s=args.step,
            cooldown_s=args.duration,
            sinks=[{"type": "webhook", "url": recv.url}],
        )
    start = time.time()
    base = start - start % 4
    for cam in cams:  # history so the first windows are complete
        fill(store, cam, base - args.window - 8, base)
    rng = random.Random(0)
    events = {
        cam: (t := start + rng.uniform(15, max(16.0, args.duration - 30)), t + 10.0) for cam in cams
    }
    reasoner = EventReasoner(events, model)
    metrics = AlertMetrics()
    sched = AlertScheduler(engine, store, reasoner, metrics=metrics,
                           config=SchedulerConfig(poll_interval_s=0.2))  # fmt: skip
    worker = DeliveryWorker(engine, {"webhook": WebhookSink(SECRET)}, metrics=metrics,
                            config=DeliveryConfig(poll_interval_s=0.1))  # fmt: skip
    stop = threading.Event()

    def ingest() -> None:  # each clip is written the moment its 4 s are over
        t = base
        while not stop.is_set():
            delay = t + 4 - time.time()
            if delay > 0 and stop.wait(delay):
                return
            for cam in cams:
                fill(store, cam, t, t + 4)
            t += 4

    feeder = threading.Thread(target=ingest, daemon=True)
    feeder.start()
    sched.start()
    worker.start()
    time.sleep(args.duration)
    stop.set()
    sched.stop()
    worker.stop()
    recv.down()
    # monotonic receipt times -> wall clock
    offset = time.time() - time.monotonic()
    lat = sorted(
        s.at + offset - events[s.body["camera_id"]][1]
        for s in recv.seen
        if s.body["camera_id"] in events
    )
    p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else None
    return {
        "cameras": args.cameras,
        "rules": args.rules,
        "step_s": args.step,
        "window_s": args.window,
        "model_cost": model is not None,
        "alerts_received": len(recv.seen),
        "expected_alerts": args.cameras * args.rules,
        "alerts_with_reason": sum(1 for s in recv.seen if s.body.get("reason")),
        "latency_s_p50": round(statistics.median(lat), 3) if lat else None,
        "latency_s_p95": round(p95, 3) if p95 is not None else None,
        "latency_s_max": round(lat[-1], 3) if lat else None,
        "target_p95_s": args.step + 3,
        "meets_target": p95 is not None and p95 <= args.step + 3,
        "score_calls": len(reasoner.score_calls()),
        "eval_latency_mean_s": round(
            metrics.registry.get_sample_value("fw_alert_eval_latency_seconds_sum")
            / max(1.0, metrics.registry.get_sample_value("fw_alert_eval_latency_seconds_count")),
            4,
        ),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--hidden", type=int, default=256, help="random model hidden size")
    p.add_argument("--layers", type=int, default=8, help="random model layers")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cameras", type=int, default=8)
    p.add_argument("--rules", type=int, default=5)
    p.add_argument("--window", type=float, default=64.0)
    p.add_argument("--step", type=float, default=8.0)
    p.add_argument("--duration", type=float, default=75.0, help="latency run, seconds")
    p.add_argument("--model-cost", action="store_true", help="run the model on every call")
    p.add_argument("--skip-rules", action="store_true")
    p.add_argument("--skip-latency", action="store_true")
    args = p.parse_args()
    out: dict[str, Any] = {"bench": "alerts"}
    with tempfile.TemporaryDirectory(prefix="fw-bench-alerts-") as d:
        tmp = Path(d)
        model = None
        if not args.skip_rules or args.model_cost:
            store = SqliteStore(tmp / "mem.sqlite3", [6])
            fill(store, 1, T0, T0 + 64)
            t = time.perf_counter()
            model = load_model(tmp, store, args.hidden, args.layers)
            out["model"] = {"hidden": args.hidden, "layers": args.layers,
                            "load_s": round(time.perf_counter() - t, 2)}  # fmt: skip
        if not args.skip_rules:
            out["rules"] = bench_rules(model, args.repeats)
        if not args.skip_latency:
            out["latency"] = bench_latency(args, tmp, model if args.model_cost else None)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
