"""The reasoner service over real HTTP (uvicorn on a loopback port) with a tiny checkpoint.

Engine: LocalReasoner on a tiny random model + SqliteStore, behind EngineService (scheduler +
worker); client: HttpReasoner. Checks the wire formats, error mapping and client retries.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import msgspec
import pytest

from flashwatch.config import ReasonerConfig
from flashwatch.messages import (
    CameraWindow,
    QueryAnswer,
    QueryRequest,
    RuleQuestion,
    ScoreAnswer,
    ScoreRequest,
    decode,
    encode,
)
from flashwatch.protocols import Reasoner, ReasonerBusy
from memory.sqlite_store import SqliteStore
from memory.testing import free_port, make_clip
from reasoner.engine import LocalReasoner
from reasoner.planning import NoFootage
from reasoner.service import MSGPACK, HttpReasoner, ReasonerUnavailable, create_app, local_service
from reasoner.testing import write_tiny_checkpoint
from tests.apiharness import serve_app as serve

pytestmark = pytest.mark.integration
T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ReasonerConfig, SqliteStore]]:
    root = tmp_path_factory.mktemp("svc")
    ck = write_tiny_checkpoint(root / "tiny", num_layers=4)
    store = SqliteStore(root / "m.sqlite3", [6, 24, 168])
    store.put_many([make_clip(1, 0, T0 + 4 * i, seed=i) for i in range(30)])
    yield ReasonerConfig(model_dir=ck, dtype="fp32"), store
    store.close()


@pytest.fixture(scope="module")
def local(setup: tuple[ReasonerConfig, SqliteStore]) -> LocalReasoner:
    return LocalReasoner.from_config(*setup)


@pytest.fixture(scope="module")
def base(setup: tuple[ReasonerConfig, SqliteStore]) -> Iterator[str]:
    app, svc = local_service(*setup, token="s3cret")  # what `flashwatch run reasoner` serves
    with serve(app) as url:
        yield url
    svc.close()


@pytest.fixture
def client(base: str) -> Iterator[HttpReasoner]:
    c = HttpReasoner(base, timeout_s=30, token="s3cret")
    yield c
    c.close()


def window(cam: int = 1) -> CameraWindow:
    return CameraWindow(camera_id=cam, camera_name="gate", t_from=T0, t_to=T0 + 64)


def test_query_and_score_over_http(client: HttpReasoner, local: LocalReasoner) -> None:
    assert isinstance(client, Reasoner) and client.health()
    ans = client.query(QueryRequest(question="What?", windows=[window()], max_new_tokens=6))
    assert (ans.strategy, ans.level, ans.frames) == ("pyramid", 0, 4 * 17)
    assert ans.timings["prefill"] > 0 and ans.tokens_kept < ans.tokens_visual
    rules = [RuleQuestion(rule_id=7, text="a fire"), RuleQuestion(rule_id=8, text="Is it dark?")]
    remote = client.score(ScoreRequest(window=window(), rules=rules))
    direct = local.score(ScoreRequest(window=window(), rules=rules))
    assert [s.rule_id for s in remote.scores] == [7, 8]
    for r, d in zip(remote.scores, direct.scores, strict=True):
        assert r.p_yes == pytest.approx(d.p_yes, abs=1e-6)


def test_json_bodies_and_errors(base: str) -> None:
    auth = {"authorization": "Bearer s3cret"}
    req = ScoreRequest(window=window(), rules=[RuleQuestion(rule_id=1, text="a dog")])
    r = httpx.post(f"{base}/v1/reason/score", content=msgspec.json.encode(req), headers=auth)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert msgspec.json.decode(r.content, type=ScoreAnswer).scores[0].rule_id == 1
    bad = httpx.post(f"{base}/v1/reason/query", content=b'{"question": ""}', headers=auth)
    assert bad.status_code == 400 and bad.json()["error"] == "bad_request"
    denied = httpx.post(f"{base}/v1/reason/score", content=encode(req))
    assert denied.status_code == 401
    missing = QueryRequest(question="?", windows=[window(cam=5)])
    r = httpx.post(
        f"{base}/v1/reason/query",
        content=encode(missing),
        headers={**auth, "content-type": MSGPACK},
    )
    assert r.status_code == 404 and r.headers["content-type"] == MSGPACK


def test_no_footage_is_raised_by_the_client(client: HttpReasoner) -> None:
    with pytest.raises(NoFootage) as err:
        client.query(QueryRequest(question="?", windows=[window(cam=5)]))
    assert err.value.camera_id == 5 and err.value.t_from == T0


class Busy:
    def query(self, request: QueryRequest) -> QueryAnswer:
        raise ReasonerBusy("4 questions queued", 2.4)

    def score(self, request: ScoreRequest) -> ScoreAnswer:
        return ScoreAnswer(scores=[])


def test_busy_is_429_with_retry_after() -> None:
    with serve(create_app(Busy())) as url:
        req = QueryRequest(question="?", windows=[window()])
        r = httpx.post(
            f"{url}/v1/reason/query", content=encode(req), headers={"content-type": MSGPACK}
        )
        assert r.status_code == 429 and r.headers["retry-after"] == "3"
        client = HttpReasoner(url)
        with pytest.raises(ReasonerBusy) as busy:
            client.query(req)
        assert busy.value.retry_after_s == 3.0 and "queued" in str(busy.value)
        assert (
            decode(
                encode(client.score(ScoreRequest(window=window(), rules=[]))), ScoreAnswer
            ).scores
            == []
        )
        client.close()


def test_client_retries_then_gives_up_on_a_dead_service() -> None:
    calls: list[int] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) < 3:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(503)

    client = HttpReasoner(
        "http://reasoner.invalid", retries=3, backoff_s=0.001, transport=httpx.MockTransport(refuse)
    )
    with pytest.raises(ReasonerUnavailable, match="HTTP 503 after 4 tries"):
        client.query(QueryRequest(question="?", windows=[window()]))
    assert len(calls) == 4
    dead = HttpReasoner(f"http://127.0.0.1:{free_port()}", retries=1, backoff_s=0.001)
    assert not dead.health()
    with pytest.raises(ReasonerUnavailable):
        dead.score(ScoreRequest(window=window(), rules=[]))
