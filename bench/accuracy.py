"""Accuracy of a model directory on the synthetic world (issue 8): JSON on stdout.

Three measurements, all through the product's own code paths:

* `qa`: held-out question answering (`reasoner.tiny.evaluate`: yes/no scored like rules, the
  other kinds decoded greedily), per question kind.
* `alerts`: a rule ("a red car is parked") scored by `LocalReasoner.score` on every
  window/step of an hour-long stream with scripted red-car parkings and distractors (blue cars
  parking, red cars driving past), turned into alerts by `alerts.policy` (k-of-n hysteresis,
  cooldown); precision = alerts overlapping a parking / alerts, recall = parkings with an
  alert / parkings.
* `needle`: one 20 s event (a red car parks) hidden in 1, 2 and 4 hours of footage, asked
  about through `LocalReasoner.query` ("When did the red car park?") with each strategy
  (pyramid, zoom, sparse), dropping off and on; correct when an answered time falls within
  the event +- 30 s.

Footage is rendered at 1 fps (level 0, 4-frame clips every 4 s) plus pyramid level 1, sent
through ingest's JPEG (its default quality, as a camera's frames reach the encoder), encoded by the
model's own UMT + ToMe and stored in the embedded memory store, exactly as ingest and
the encoder would store them.

    .venv/bin/python -m bench.accuracy --model models/tiny [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoder_trt.checkpoint import load_clip_encoder
from encoder_trt.preprocess import jpeg_round_trip, normalise, resize_frame
from flashwatch.config import MemoryConfig, ReasonerConfig
from flashwatch.messages import CameraWindow, QueryRequest, RuleQuestion, ScoreRequest
from ingest.synth.scene import Scene, SceneSpec
from memory import open_store
from memory.codec import encode_tokens
from memory.store import MemoryStore
from reasoner.engine import LocalReasoner
from reasoner.tiny.evaluate import INGEST_JPEG_QUALITY, evaluate
from reasoner.tiny.query_path import EPOCH0

RULE = "a red car is parked"


@dataclass
class Stream:
    camera_id: int
    scene: Scene
    seconds: float


def render_stream(
    seed: int,
    seconds: float,
    events: tuple[str, ...],
    cars_per_min: float,
    render: tuple[int, int] = (160, 120),
) -> Scene:
    spec = SceneSpec(
        seed=seed,
        duration=seconds,
        events=events,
        width=render[0],
        height=render[1],
        fps=1.0,
        people_per_min=1.5,
        cars_per_min=cars_per_min,
    )
    return Scene.from_spec(spec)


def store_stream(
    store: MemoryStore, encoder: Any, size: int, stream: Stream, levels: int = 2
) -> int:
    """Encode the stream's level-0 (1 s) and level-1 (4 s) clips into memory; returns clips."""
    n = 0
    for level in range(levels):
        step = 4.0**level
        starts = np.arange(0.0, stream.seconds - 4 * step + 1e-9, 4 * step)
        for chunk in range(0, len(starts), 32):
            batch = starts[chunk : chunk + 32]
            frames = [
                [
                    jpeg_round_trip(
                        resize_frame(stream.scene.render(float(t0 + i * step)), size),
                        INGEST_JPEG_QUALITY,
                    )
                    for i in range(4)
                ]
                for t0 in batch
            ]
            pixels = normalise(np.stack([f for clip in frames for f in clip]))
            with torch.no_grad():
                tokens = encoder(pixels.reshape(len(batch), 4, *pixels.shape[1:])).numpy()
            for t0, tok in zip(batch, tokens, strict=True):
                t = tuple(EPOCH0 + float(t0) + i * step for i in range(4))
                store.put(
                    encode_tokens(
                        tok, "fp16", camera_id=stream.camera_id, level=level, epoch=0, t=t
                    )
                )
                n += 1
    return n


def window(stream: Stream, t_from: float, t_to: float) -> CameraWindow:
    return CameraWindow(camera_id=stream.camera_id, t_from=EPOCH0 + t_from, t_to=EPOCH0 + t_to)


# ----------------------------------------------------------------------------- alerts


def alert_accuracy(
    reasoner: LocalReasoner,
    store: MemoryStore,
    encoder: Any,
    size: int,
    seconds: float,
    render: tuple[int, int] = (160, 120),
) -> dict[str, Any]:
    from alerts.policy import RuleState, decide

    rng = np.random.default_rng(5)
    gap = seconds / 8
    events = []
    for i in range(8):
        at = int(i * gap + rng.uniform(0.1, 0.5) * gap)
        kind = ("red_car_parks", "blue_car_parks", "red_car_crosses", "red_car_parks")[i % 4]
        events.append(f"{kind}@{at}" + ("+40" if "parks" in kind else ""))
    scene = render_stream(71, seconds, tuple(events), cars_per_min=0.0, render=render)
    stream = Stream(900, scene, seconds)
    store_stream(store, encoder, size, stream, levels=1)
    parks = [
        (e.t_start, e.t_end)
        for e in scene.truth.events
        if e.kind == "park" and e.colour == "red" and e.needle
    ]
    state = RuleState()
    fired: list[tuple[float, float]] = []
    t = 16.0
    while t <= seconds:
        answer = reasoner.score(
            ScoreRequest(
                window=window(stream, t - 16, t), rules=[RuleQuestion(rule_id=1, text=RULE)]
            )
        )
        decision = decide(
            state,
            window_end=EPOCH0 + t,
            p_yes=answer.scores[0].p_yes,
            threshold=0.5,
            k=2,
            n=3,
            cooldown_s=120,
        )
        state = decision.state
        if decision.fire:
            fired.append((t - 16, t))
        t += 4
    hit = [any(a < e1 and b > e0 for e0, e1 in parks) for a, b in fired]
    found = [any(a < e1 and b > e0 for a, b in fired) for e0, e1 in parks]
    return {
        "seconds": seconds,
        "events": events,
        "alerts": len(fired),
        "precision": round(float(np.mean(hit)), 4) if hit else None,
        "recall": round(float(np.mean(found)), 4) if found else None,
    }


# ----------------------------------------------------------------------------- needle


def needle(
    reasoners: dict[str, LocalReasoner],
    store: MemoryStore,
    encoder: Any,
    size: int,
    hours: float,
    seed: int,
    render: tuple[int, int] = (160, 120),
) -> list[dict[str, Any]]:
    seconds = hours * 3600.0
    rng = np.random.default_rng(seed)
    at = float(int(rng.uniform(0.1, 0.9) * seconds))
    scene = render_stream(
        seed, seconds, (f"red_car_parks@{at:g}+20",), cars_per_min=0.0, render=render
    )
    stream = Stream(1000 + seed, scene, seconds)
    store_stream(store, encoder, size, stream)
    event = next(e for e in scene.truth.events if e.kind == "park")
    rows = []
    for drop, reasoner in reasoners.items():
        for strategy in ("auto", "pyramid", "zoom", "sparse"):
            t0 = time.perf_counter()
            ans = reasoner.query(
                QueryRequest(
                    question="When did the red car park?",
                    windows=[window(stream, 0, seconds)],
                    strategy=strategy,
                    max_new_tokens=16,
                )
            )
            said = [a.t - EPOCH0 for a in ans.times]
            ok = any(event.t_start - 30 <= s <= event.t_end + 30 for s in said)
            rows.append(
                {
                    "hours": hours,
                    "strategy": strategy,
                    "drop": drop,
                    "correct": ok,
                    "answer": ans.answer,
                    "said_s": [round(s, 1) for s in said],
                    "event_s": [round(event.t_start, 1), round(event.t_end, 1)],
                    "seconds": round(time.perf_counter() - t0, 2),
                }
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--model", type=Path, default=Path("models/tiny"))
    ap.add_argument("--hours", default="1,2,4", help="Needle haystack lengths.")
    ap.add_argument("--needles", type=int, default=3, help="Needle seeds per length.")
    ap.add_argument("--qa-windows", type=int, default=120)
    ap.add_argument("--alert-seconds", type=float, default=3600.0)
    ap.add_argument("--quick", action="store_true", help="Small sizes (a smoke run).")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--render", default="160x120", help="Camera size WxH (A3 and the demo use 320x240)."
    )
    args = ap.parse_args()
    if args.quick:
        args.hours, args.needles, args.qa_windows, args.alert_seconds = "0.1", 1, 8, 600.0
    torch.set_num_threads(args.threads)
    from ingest.synth.cli import frame_size

    render = frame_size(args.render)

    t0 = time.perf_counter()
    out: dict[str, Any] = {
        "bench": "accuracy",
        "model": str(args.model),
        "machine": platform.node(),
        "date": time.strftime("%Y-%m-%d"),
        "render": args.render,
    }
    out["qa"] = evaluate(args.model, windows=args.qa_windows, threads=args.threads, render=render)
    out["qa"].pop("examples", None)
    encoder, report = load_clip_encoder(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(MemoryConfig(retention_hours=[87840.0]), Path(tmp))
        reasoners = {
            drop: LocalReasoner.from_config(
                ReasonerConfig(model_dir=args.model, drop_mode=drop, drop_layers=[1, 3]),
                store,
            )
            for drop in ("none", "uniform0_attention")
        }
        out["alerts"] = alert_accuracy(
            reasoners["none"], store, encoder, report.image_size, args.alert_seconds, render
        )
        rows = []
        for hours in (float(h) for h in args.hours.split(",")):
            for seed in range(args.needles):
                rows += needle(
                    reasoners, store, encoder, report.image_size, hours, 40 + seed, render
                )
        out["needle"] = rows
        summary: dict[str, float] = {}
        for r in rows:
            key = f"{r['hours']:g}h/{r['strategy']}/{r['drop']}"
            summary.setdefault(key, 0.0)
            summary[key] += r["correct"] / args.needles
        out["needle_accuracy"] = {k: round(v, 4) for k, v in summary.items()}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
