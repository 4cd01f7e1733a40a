"""Protocols the composition root wires together; components satisfy them structurally."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from flashwatch.messages import QueryAnswer, QueryRequest, ScoreAnswer, ScoreRequest


@runtime_checkable
class Reasoner(Protocol):
    """Answers questions over memory and scores rules (local model or remote service)."""

    def query(self, request: QueryRequest) -> QueryAnswer: ...

    def score(self, request: ScoreRequest) -> ScoreAnswer: ...


@runtime_checkable
class CameraMemory(Protocol):
    """The part of the memory store the API needs: forgetting a deleted camera."""

    def delete_camera(self, camera_id: int) -> None: ...

    def ping(self) -> bool: ...
