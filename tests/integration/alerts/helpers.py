"""Shared pieces of the alerts tests: a migrated registry, cameras/rules, level-0 footage in a
real memory store, a scripted reasoner stub, and a real HTTP webhook receiver on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from alerts.store import AlertDraft, commit_window
from flashwatch.db.engine import create_db_engine, upgrade
from flashwatch.db.models import Alert, Camera, Rule
from flashwatch.messages import RuleScore, ScoreAnswer, ScoreRequest
from flashwatch.security import verify_webhook_signature
from memory.store import MemoryStore
from memory.testing import make_clip

SECRET = b"test-webhook-secret-0123456789"
T0 = 1_700_000_000.0  # a multiple of 8 s


def registry(path: Path) -> Engine:
    engine = create_db_engine(f"sqlite:///{path}")
    upgrade(engine)
    return engine


def add_camera(engine: Engine, cam_id: int, **kw: Any) -> Camera:
    with Session(engine, expire_on_commit=False) as s:
        cam = Camera(id=cam_id, name=f"cam-{cam_id}", url=f"rtsp://example.com/{cam_id}", **kw)
        s.add(cam)
        s.commit()
        return cam


def add_rule(engine: Engine, name: str, cams: list[int], **kw: Any) -> Rule:
    values: dict[str, Any] = {
        "camera_ids": cams,
        "window_s": 16.0,
        "step_s": 8.0,
        "cooldown_s": 0.0,
        **kw,
    }
    with Session(engine, expire_on_commit=False) as s:
        rule = Rule(name=name, text=f"does {name} happen?", **values)
        s.add(rule)
        s.commit()
        return rule


def alerts(engine: Engine, **where: Any) -> list[Alert]:
    with Session(engine) as s:
        stmt = select(Alert).order_by(Alert.id)  # type: ignore[arg-type]
        for k, v in where.items():
            stmt = stmt.where(getattr(Alert, k) == v)
        return list(s.exec(stmt).all())


def fire(engine: Engine, rule: Rule, camera_id: int, end: float, **kw: Any) -> Alert:
    """Create an alert (and its outbox rows for the rule's sinks) as the scheduler would."""
    with Session(engine, expire_on_commit=False) as s:
        cam = s.get(Camera, camera_id)
    assert cam is not None
    draft = AlertDraft(rule, cam, "alert", end - rule.window_s, end, 0.9, reason="r", **kw)
    (alert,) = commit_window(engine, [], [draft])
    return alert


def thumb(cam: int, t0: float) -> bytes:
    return f"jpeg:{cam}:{round(t0 * 1000)}".encode()


def feed(
    memory: MemoryStore, cam: int, t_from: float, t_to: float, *, real_shape: bool = False
) -> None:
    """Level-0 clips (4 frames 1 s apart) starting every 4 s in [t_from, t_to); tiny token
    arrays unless `real_shape` (64 × 1024, what a model can read)."""
    shape = {"tokens": 64, "channels": 1024} if real_shape else {"tokens": 4, "channels": 8}
    clips = []
    t = t_from
    while t < t_to - 1e-9:
        clips.append(make_clip(cam, 0, t, **shape, thumb=thumb(cam, t), seed=1))
        t += 4.0
    memory.put_many(clips)


@dataclass
class ScriptedReasoner:
    """A scripted stand-in for the reasoner (policy tests only): P(yes) comes from `script`
    (rule_id, window end) -> probability; explain calls answer with a fixed reason."""

    script: Callable[[int, float], float]
    evidence: Callable[[float], list[float]] | None = None
    """Window end -> "most attended" clip starts, like the real reasoner reports."""
    report_text: bool = True
    """False: report answers come only from explain calls (as with the local reasoner)."""
    calls: list[ScoreRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def score(self, request: ScoreRequest) -> ScoreAnswer:
        with self.lock:
            self.calls.append(request)
        scores = []
        for q in request.rules:
            p = self.script(q.rule_id, request.window.t_to)
            if request.explain:
                text = f"scripted reason for rule {q.rule_id}"
            elif q.mode == "report" and self.report_text:
                text = f"{round(p * 10)} people"
            else:
                text = ""
            ev = self.evidence(request.window.t_to) if self.evidence else []
            scores.append(RuleScore(rule_id=q.rule_id, p_yes=p, answer=text, evidence=ev))
        return ScoreAnswer(scores=scores)

    def query(self, request: Any) -> Any:
        raise NotImplementedError

    def score_calls(self) -> list[ScoreRequest]:
        return [c for c in self.calls if not c.explain]

    def explain_calls(self) -> list[ScoreRequest]:
        return [c for c in self.calls if c.explain]


@dataclass
class Seen:
    key: str
    verified: bool
    body: dict[str, Any]
    at: float


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 that checks every request's HMAC and processes each
    Idempotency-Key once (what a well-behaved receiver of at-least-once webhooks does).

    `down()` closes the listening socket (connections are refused); `up()` reopens the same
    port. `hold` makes handlers wait before answering (to kill a sender mid-delivery)."""

    def __init__(self, secret: bytes = SECRET, status: int = 204) -> None:
        self.secret = secret
        self.status = status
        self.seen: list[Seen] = []
        self.processed: dict[str, dict[str, Any]] = {}
        self.hold = threading.Event()
        self.got_request = threading.Event()
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        recv = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                stamp = int(self.headers.get("X-FlashWatch-Timestamp", "0"))
                sig = self.headers.get("X-FlashWatch-Signature", "")
                key = self.headers.get("Idempotency-Key", "")
                ok = verify_webhook_signature(recv.secret, stamp, body, sig)
                with recv.lock:
                    recv.seen.append(Seen(key, ok, json.loads(body), time.monotonic()))
                    if ok and recv.status < 300 and key not in recv.processed:
                        recv.processed[key] = json.loads(body)
                recv.got_request.set()
                while recv.hold.is_set():
                    time.sleep(0.02)
                self.send_response(recv.status if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def up(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def keys(self) -> list[str]:
        with self.lock:
            return [s.key for s in self.seen]
