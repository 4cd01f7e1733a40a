"""Following the API's alert stream across restarts (`flashwatch alerts tail`).

An operator leaves `alerts tail` running in a terminal or pipes it into another tool, so a
rolling restart of the API must not end it or lose what fired meanwhile. The stream names
every alert with its id, and its start position too before the first alert: after a drop
the follower reconnects with that id as Last-Event-ID, backing off from 1 s to 30 s, and the
API sends exactly the alerts after it. Refusals (4xx: a revoked token, an unknown camera)
end it, as does failing to connect the first time: that is a wrong URL, not a restart.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from flashwatch.cli.client import error_message

READ_TIMEOUT_S = 60.0
"""The API sends a keepalive every 15 s: a minute of silence is a dead connection."""
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0


class StreamRefused(Exception):
    """The API answered the subscription with an error status: retrying will not help."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"error {status}: {message}")
        self.status = status


@dataclass
class AlertFollower:
    """Reads `alert` events from `{base}/v1/alerts/stream`, reconnecting when told to."""

    base: str
    headers: dict[str, str]
    params: dict[str, Any] = field(default_factory=dict)
    reconnect: bool = True
    last_id: int | None = None  # the id to resume after (the stream's last `id:` line)
    connections: int = 0  # subscriptions the API accepted

    def follow(
        self, on_alert: Callable[[dict[str, Any]], bool], note: Callable[[str], None]
    ) -> None:
        """Calls `on_alert` with each alert until it returns False. Raises `StreamRefused`,
        or `httpx.HTTPError` when the first connection fails or `reconnect` is off."""
        backoff = FIRST_BACKOFF_S
        while True:
            try:
                for alert in self._one_connection(note):
                    backoff = FIRST_BACKOFF_S
                    if not on_alert(alert):
                        return
                why = "the API closed the stream"
            except httpx.HTTPError as exc:
                if self.connections == 0 or not self.reconnect:
                    raise
                why = f"the stream was lost ({type(exc).__name__})"
            if not self.reconnect:
                return
            after = f", resuming after alert {self.last_id}" if self.last_id is not None else ""
            note(f"{why}; reconnecting in {backoff:.0f} s{after}")
            time.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _one_connection(self, note: Callable[[str], None]) -> Iterator[dict[str, Any]]:
        headers = dict(self.headers)
        if self.last_id is not None:
            headers["Last-Event-ID"] = str(self.last_id)
        with httpx.stream(
            "GET",
            self.base + "/v1/alerts/stream",
            params=self.params,
            headers=headers,
            timeout=httpx.Timeout(10.0, read=READ_TIMEOUT_S),
        ) as resp:
            if resp.status_code >= 400:
                resp.read()
                if resp.status_code >= 500 and self.connections:
                    resp.raise_for_status()  # a proxy's 502/503 while the API restarts
                raise StreamRefused(resp.status_code, error_message(resp))
            note(f"{'reconnected to' if self.connections else 'following alerts at'} {self.base}")
            self.connections += 1
            for line in resp.iter_lines():
                if line.startswith("id:") and line[3:].strip().isdigit():
                    self.last_id = int(line[3:].strip())
                elif line.startswith("data:"):
                    yield json.loads(line[5:].strip())
