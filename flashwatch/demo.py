"""`flashwatch demo`: the whole product on one machine with the bundled tiny model.

What it does, through the public HTTP API like any operator would:
1. renders a few synthetic cameras (`ingest.synth`) with a scripted event on one of them
   (default: a red car parks) and a control camera without it;
2. starts every role in this process on the embedded defaults (SQLite registry, SQLite memory,
   in-process bus) and the API on `--port`;
3. registers the cameras (file sources replayed in real time, so they behave like live feeds
   whose first frame is "now") and a standing rule;
4. prints each alert as it fires, with its window, score, reason and evidence times;
5. once the footage has played, asks a question about the last minutes and prints the answer
   with the times it mentions resolved to wall-clock time;
6. keeps the API up (`--linger` seconds, or until Ctrl-C) so the operator can look around.

The demo owns its data directory (default `data/demo`) and clears it at start (only if a
previous demo created it).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from flashwatch.api import create_app
from flashwatch.api.serving import ApiServer
from flashwatch.config import Settings, load_settings
from flashwatch.pipeline import Pipeline
from flashwatch.runtime import BUNDLED_MODEL, build_state, ensure_admin_token, with_bundled_model

log = logging.getLogger("flashwatch.demo")
Echo = Callable[[str], None]


@dataclass(frozen=True)
class DemoCamera:
    name: str
    seed: int
    events: tuple[str, ...]  # `flashwatch synth` event specs, e.g. "red_car_parks@40+70"
    people_per_min: float = 1.5
    cars_per_min: float = 0.0  # background cars off: the control camera must not show a red car


DEFAULT_CAMERAS = (
    DemoCamera("gate", 11, ("red_car_parks@40+70",)),
    DemoCamera("yard", 12, ("blue_car_parks@50+60",)),
)
DEFAULT_RULE = "a red car is parked"
DEFAULT_QUESTION = "When did the red car park?"


@dataclass(frozen=True)
class DemoOptions:
    data_dir: Path = Path("data/demo")
    port: int = 8080
    seconds: float = 150.0  # footage per camera
    rule: str = DEFAULT_RULE
    question: str = DEFAULT_QUESTION
    linger_s: float | None = None  # keep the API up this long after the answer (None: forever)
    cameras: tuple[DemoCamera, ...] = DEFAULT_CAMERAS
    model_dir: Path | None = None  # None: the bundled tiny model


def demo_settings(opts: DemoOptions) -> Settings:
    """Embedded defaults plus what the demo needs: file sources replayed in real time."""
    model: dict[str, Any] = {"model_dir": opts.model_dir} if opts.model_dir else {}
    settings = with_bundled_model(
        load_settings(
            data_dir=opts.data_dir,
            api={"host": "127.0.0.1", "port": opts.port, "sse_poll_s": 0.2},
            ingest={"allow_file_sources": True, "file_realtime": True, "pyramid_levels": 2},
            encoder=model,
            reasoner=model,
        )
    )
    if settings.encoder.model_dir is None:
        raise RuntimeError(
            f"no model: the bundled tiny model is missing ({BUNDLED_MODEL}); pass --model-dir"
        )
    return settings


def render_cameras(opts: DemoOptions, echo: Echo) -> list[Path]:
    from ingest.synth.scene import Scene, SceneSpec
    from ingest.synth.video import write_video

    out = []
    for cam in opts.cameras:
        path = opts.data_dir / "footage" / f"{cam.name}.mp4"
        spec = SceneSpec(
            seed=cam.seed,
            duration=opts.seconds,
            events=cam.events,
            width=320,
            height=240,
            fps=5.0,
            people_per_min=cam.people_per_min,
            cars_per_min=cam.cars_per_min,
        )
        write_video(Scene.from_spec(spec), path)
        scripted = ", ".join(cam.events) or "nothing scripted"
        echo(f"  rendered camera {cam.name!r}: {opts.seconds:g} s ({scripted})")
        out.append(path)
    return out


@contextmanager
def running(settings: Settings) -> Iterator[tuple[str, str, Pipeline]]:
    """Every role in this process and the API over HTTP; yields (base URL, token, pipeline)."""
    state = build_state(settings)
    token_file = ensure_admin_token(state)
    if token_file is None:
        raise RuntimeError("the demo data directory already had an admin token")
    pipeline = Pipeline(state, ("api", "ingest", "encoder", "reasoner", "alerts"))
    pipeline.start()
    missing = [r for r in ("ingest", "encoder", "reasoner", "alerts") if r not in pipeline.started]
    if missing:
        pipeline.stop()
        why = "; ".join(f"{r}: {pipeline.skipped.get(r, '?')}" for r in missing)
        raise RuntimeError(f"roles did not start: {why}")
    cfg = settings.api
    server = ApiServer(create_app(state), host=cfg.host, port=cfg.port, closing=state.closing)
    thread = threading.Thread(target=server.run, name="demo-api", daemon=True)
    thread.start()
    base = f"http://{cfg.host}:{cfg.port}"
    deadline = time.monotonic() + 15
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        if not server.started:
            raise RuntimeError(f"the API did not start on {base} (port in use? try --port)")
        yield base, token_file.read_text().strip(), pipeline
    finally:
        server.should_exit = True
        thread.join(10)
        pipeline.stop()


def _when(ts: str) -> str:
    return datetime.fromisoformat(ts).astimezone().strftime("%H:%M:%S")


def print_alert(alert: dict[str, Any], names: dict[int, str], echo: Echo) -> None:
    evidence = ", ".join(
        datetime.fromtimestamp(t, UTC).astimezone().strftime("%H:%M:%S")
        for t in alert["evidence"][:4]
    )
    echo(
        f"ALERT #{alert['id']} [{alert['severity']}] camera {names.get(alert['camera_id'], '?')}: "
        f"window {_when(alert['window_start'])}-{_when(alert['window_end'])}, "
        f"P(yes)={alert['score']:.2f}, evidence at {evidence or '-'}"
        + (f" - {alert['reason']}" if alert["reason"] else "")
    )


MARKER = ".flashwatch-demo"


def prepare_data_dir(path: Path) -> None:
    """Start from an empty directory; only a previous demo's directory (marked) is cleared,
    so a mistyped --data-dir never deletes anything else."""
    if path.exists() and any(path.iterdir()):
        if not (path / MARKER).is_file():
            raise RuntimeError(f"{path} is not empty and not a demo directory; choose another")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text("created by `flashwatch demo`; cleared by the next demo run\n")


def run_demo(opts: DemoOptions, echo: Echo = print) -> dict[str, Any]:
    """Run the scripted demo; returns what happened (alerts per camera, the answer)."""
    settings = demo_settings(opts)  # fails fast without a model
    prepare_data_dir(opts.data_dir)
    echo("FlashWatch demo: rendering synthetic cameras ...")
    videos = render_cameras(opts, echo)
    result: dict[str, Any] = {"alerts": {}, "answer": None}
    with running(settings) as (base, token, _pipeline):
        http = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120
        )
        echo(f"API on {base}/v1 (admin token in {opts.data_dir / 'admin.token'})")
        start = datetime.now(UTC)
        names: dict[int, str] = {}
        for cam, video in zip(opts.cameras, videos, strict=True):
            r = http.post(
                "/v1/cameras",
                json={
                    "name": cam.name,
                    "url": video.resolve().as_uri(),
                    "source_start_at": start.isoformat(),
                },
            )
            r.raise_for_status()
            names[r.json()["id"]] = cam.name
            result["alerts"][cam.name] = []
        rule = http.post(
            "/v1/rules",
            json={
                "name": "demo-rule",
                "text": opts.rule,
                "all_cameras": True,
                "window_s": 16,
                "step_s": 4,
                "cooldown_s": 120,
            },
        )
        rule.raise_for_status()
        echo(f"standing rule: {opts.rule!r} on every camera (16 s window, every 4 s)")
        echo(f"playing {opts.seconds:g} s of footage in real time ...")
        seen: set[int] = set()
        end = time.monotonic() + opts.seconds + 20
        while time.monotonic() < end:
            page = http.get("/v1/alerts", params={"limit": 100}).json()["items"]
            for alert in sorted(page, key=lambda a: a["id"]):
                if alert["id"] not in seen:
                    seen.add(alert["id"])
                    print_alert(alert, names, echo)
                    result["alerts"][names[alert["camera_id"]]].append(alert)
            time.sleep(1.0)
        first = next(iter(names))
        echo(f"question about camera {names[first]!r}: {opts.question!r}")
        answer = http.post(
            "/v1/queries",
            json={
                "question": opts.question,
                "camera_ids": [first],
                "since": start.isoformat(),
                "until": (start + timedelta(seconds=opts.seconds)).isoformat(),
            },
        )
        answer.raise_for_status()
        body = answer.json()
        result["answer"] = body
        times = ", ".join(f"{t['text']!r} = {_when(t['at'])}" for t in body["times"])
        echo(f"answer: {body['answer']}" + (f"  ({times})" if times else ""))
        echo(f"(footage started at {start.astimezone().strftime('%H:%M:%S')})")
        if opts.linger_s is None:
            echo(f"API still up on {base}/v1 - Ctrl-C to stop.")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        elif opts.linger_s > 0:
            time.sleep(opts.linger_s)
    return result
