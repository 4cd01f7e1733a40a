"""Protocols the composition root wires together; components satisfy them structurally."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from flashwatch.messages import QueryAnswer, QueryRequest, ScoreAnswer, ScoreRequest


class ReasonerBusy(Exception):
    """The reasoner's admission control refused the request; retry after `retry_after_s`."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@runtime_checkable
class Reasoner(Protocol):
    """Answers questions over memory and scores rules (local model or remote service).

    Both calls may raise `ReasonerBusy`; `score` (alerts) must be served ahead of `query`
    so a long question never starves alert evaluation.
    """

    def query(self, request: QueryRequest) -> QueryAnswer: ...

    def score(self, request: ScoreRequest) -> ScoreAnswer: ...


@runtime_checkable
class CameraMemory(Protocol):
    """The part of the memory store the API needs: forgetting a deleted camera."""

    def delete_camera(self, camera_id: int) -> None: ...

    def ping(self) -> bool: ...
