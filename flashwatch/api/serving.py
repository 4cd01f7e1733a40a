"""The HTTP server the API runs in, made to stop: alert streams end when it does.

An alert stream (`GET /v1/alerts/stream`) never ends by itself, and uvicorn, told to stop,
waits for every open request, so with one subscriber a SIGTERM'd API never exited. This
server raises `closing` first; each stream then finishes its response within one poll, the
process exits, and the client reconnects with Last-Event-ID to whichever instance serves
next, missing nothing. Requests still open after `SHUTDOWN_GRACE_S` are cancelled.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import uvicorn

SHUTDOWN_GRACE_S = 5


class ApiServer(uvicorn.Server):
    """uvicorn.Server for an ASGI app; `closing` is clear while it serves and set when it
    starts to shut down."""

    def __init__(
        self, app: Any, *, host: str, port: int, closing: threading.Event | None = None
    ) -> None:
        super().__init__(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_config=None,
                access_log=False,
                server_header=False,
                timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
            )
        )
        self.closing = closing if closing is not None else threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.closing.clear()
        await super().startup(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.closing.set()
        await super().shutdown(sockets)
