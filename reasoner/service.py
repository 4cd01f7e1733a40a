"""The reasoner over HTTP for distributed mode: a small FastAPI app and its client.

Server (`create_app(reasoner)`): POST /v1/reason/query (QueryRequest -> QueryAnswer) and
POST /v1/reason/score (ScoreRequest -> ScoreAnswer); bodies are the `flashwatch.messages`
structs as msgpack (`Content-Type: application/msgpack`, what `HttpReasoner` sends) or JSON.
The reply uses msgpack when the request's Accept or Content-Type asks for it, else JSON.
GET /v1/health answers 200 without touching the model. Errors:

* 400 `bad_request`: not a message of this schema version (the body says why);
* 404 `no_footage`: memory has nothing in the window (`NoFootage`, with camera and range);
* 429 `busy` + Retry-After (whole seconds, >= 1): the scheduler's admission control;
* 401 when the app has a token and the request's `Authorization: Bearer` does not match.

The service is meant for the internal network; the optional shared token keeps a stray client
from spending GPU time. `reasoner` is normally an `EngineService` (scheduler + worker).

Client (`HttpReasoner`): the `Reasoner` protocol over that API with httpx. Connection failures
and 502/503/504 are retried (bounded, exponential backoff) because nothing ran; a read timeout
is not (the question may still be running), it raises `TimeoutError`. 429 becomes
`ReasonerBusy` with the server's hint, 404 becomes `NoFootage`.
"""

from __future__ import annotations

import hmac
import logging
import math
import time
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import msgspec
from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from flashwatch.messages import (
    SCHEMA_VERSION,
    MessageError,
    QueryAnswer,
    QueryRequest,
    ScoreAnswer,
    ScoreRequest,
    decode,
    encode,
)
from flashwatch.protocols import Reasoner, ReasonerBusy
from reasoner.planning import NoFootage

if TYPE_CHECKING:
    from flashwatch.config import ReasonerConfig
    from memory.store import MemoryStore
    from reasoner.scheduler import EngineService

__all__ = ["MSGPACK", "HttpReasoner", "ReasonerUnavailable", "create_app", "local_service"]

log = logging.getLogger(__name__)
MSGPACK = "application/msgpack"
M = TypeVar("M", QueryRequest, ScoreRequest, QueryAnswer, ScoreAnswer)


class ReasonerUnavailable(ConnectionError):
    """The remote reasoner could not be reached (or kept failing) within the retry bound."""


def _wants_msgpack(request: Request) -> bool:
    return MSGPACK in request.headers.get("accept", "") or MSGPACK in request.headers.get(
        "content-type", ""
    )


def _reply(
    request: Request, status: int, body: Any, headers: dict[str, str] | None = None
) -> Response:
    if _wants_msgpack(request):
        payload = encode(body) if hasattr(body, "schema") else msgspec.msgpack.encode(body)
        return Response(payload, status, headers, media_type=MSGPACK)
    return Response(msgspec.json.encode(body), status, headers, media_type="application/json")


def _parse(body: bytes, content_type: str, kind: type[M]) -> M:
    if MSGPACK in content_type:
        return decode(body, kind)
    try:
        msg = msgspec.json.decode(body, type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MessageError(f"{kind.__name__}: {exc}") from None
    if msg.schema != SCHEMA_VERSION:
        raise MessageError(f"{kind.__name__}: schema version {msg.schema} is not supported")
    return msg


def create_app(reasoner: Reasoner, *, token: str | None = None) -> FastAPI:
    """The HTTP face of `reasoner` (normally an `EngineService`)."""
    app = FastAPI(title="FlashWatch reasoner", docs_url=None, redoc_url=None, openapi_url=None)

    async def handle(request: Request, kind: type[Any], call: Any) -> Response:
        if token is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return _reply(request, 401, {"error": "unauthorized"})
        try:
            msg = _parse(await request.body(), request.headers.get("content-type", ""), kind)
        except MessageError as exc:
            return _reply(request, 400, {"error": "bad_request", "detail": str(exc)})
        try:
            answer = await run_in_threadpool(call, msg)
        except ReasonerBusy as exc:
            retry = max(1, math.ceil(exc.retry_after_s))
            body = {"error": "busy", "detail": str(exc), "retry_after_s": exc.retry_after_s}
            return _reply(request, 429, body, {"Retry-After": str(retry)})
        except NoFootage as exc:
            body = {
                "error": "no_footage",
                "detail": str(exc),
                "camera_id": exc.camera_id,
                "t_from": exc.t_from,
                "t_to": exc.t_to,
            }
            return _reply(request, 404, body)
        return _reply(request, 200, answer)

    @app.post("/v1/reason/query")
    async def query(request: Request) -> Response:
        return await handle(request, QueryRequest, reasoner.query)

    @app.post("/v1/reason/score")
    async def score(request: Request) -> Response:
        return await handle(request, ScoreRequest, reasoner.score)

    @app.get("/v1/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def local_service(
    cfg: ReasonerConfig, store: MemoryStore, *, s0: float = 1.0, token: str | None = None
) -> tuple[FastAPI, EngineService]:
    """The app for `flashwatch run reasoner`: load `cfg.model_dir`, wrap it in the scheduler's
    worker, serve it. Close the service (`.close()`) on shutdown. Torch is imported only here,
    so API processes that just use `HttpReasoner` never load it."""
    from reasoner.engine import LocalReasoner
    from reasoner.scheduler import EngineService

    service = EngineService(LocalReasoner.from_config(cfg, store, s0=s0))
    return create_app(service, token=token), service


class HttpReasoner:
    """`Reasoner` backed by a remote reasoner service (thread-safe; one pooled client)."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 3.0,
        retries: int = 2,
        backoff_s: float = 0.2,
        token: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.retries, self.backoff_s = retries, backoff_s
        headers = {"content-type": MSGPACK, "accept": MSGPACK}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        timeout = httpx.Timeout(timeout_s, connect=min(connect_timeout_s, timeout_s))
        self._client = httpx.Client(timeout=timeout, headers=headers, transport=transport)

    def close(self) -> None:
        self._client.close()

    def query(self, request: QueryRequest) -> QueryAnswer:
        return self._call("/v1/reason/query", request, QueryAnswer)

    def score(self, request: ScoreRequest) -> ScoreAnswer:
        return self._call("/v1/reason/score", request, ScoreAnswer)

    def health(self) -> bool:
        try:
            return self._client.get(f"{self.url}/v1/health").status_code == 200
        except httpx.HTTPError:
            return False

    def _call(self, path: str, message: Any, kind: type[M]) -> M:
        body = encode(message)
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                r = self._client.post(f"{self.url}{path}", content=body)
            except httpx.TimeoutException as exc:
                if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
                    last = f"{type(exc).__name__}: {exc}"
                    continue
                raise TimeoutError(f"reasoner at {self.url} did not answer in time") from exc
            except httpx.TransportError as exc:  # refused, reset before a reply: nothing ran
                last = f"{type(exc).__name__}: {exc}"
                continue
            if r.status_code in (502, 503, 504):
                last = f"HTTP {r.status_code}"
                continue
            return self._result(r, kind)
        raise ReasonerUnavailable(f"reasoner at {self.url}: {last} after {self.retries + 1} tries")

    @staticmethod
    def _result(r: httpx.Response, kind: type[M]) -> M:
        if r.status_code == 200:
            return decode(r.content, kind)
        try:
            err = (
                msgspec.msgpack.decode(r.content)
                if MSGPACK in r.headers.get("content-type", "")
                else r.json()
            )
        except (ValueError, msgspec.DecodeError):  # an unparseable error body is still an error
            err = {"detail": r.text[:200]}
        detail = str(err.get("detail", "")) if isinstance(err, dict) else str(err)
        if r.status_code == 429:
            try:
                retry = float(r.headers.get("retry-after", "1"))
            except ValueError:  # an HTTP-date, which this service never sends
                retry = 1.0
            raise ReasonerBusy(detail or "the reasoner is busy", retry)
        if r.status_code == 404 and isinstance(err, dict) and err.get("error") == "no_footage":
            raise NoFootage(int(err["camera_id"]), float(err["t_from"]), float(err["t_to"]))
        raise RuntimeError(f"reasoner answered HTTP {r.status_code}: {detail}")
