"""Serve the API with uvicorn so that stopping it answers the agents' long polls first.

uvicorn's shutdown stops accepting connections, waits ``timeout_graceful_shutdown`` for open
requests, cancels the rest and only then runs the lifespan shutdown. A long poll held for up to
25 s outlives that wait: it was cancelled mid-request (a CancelledError traceback in the log for
every connected agent, and a dropped connection the agent counts as a failure), and the
lifespan's wake-up came too late to help. ``handle_exit`` runs when the signal arrives, before
any of that, so it is where the waker learns that the API is closing.
"""

from __future__ import annotations

import contextlib
from types import FrameType

import uvicorn
from fastapi import FastAPI

from controlplane.api.waker import Waker

STARTUP_FAILURE = 3  # uvicorn's exit code when the server never started


class ApiServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # Set by the lifespan; absent when the signal comes before start-up finished (no polls yet).
        waker = getattr(self._app.state, "waker", None)
        if isinstance(waker, Waker):
            waker.close_soon()


def serve(
    app: FastAPI,
    *,
    host: str,
    port: int,
    log_level: str,
    access_log: bool,
    timeout_graceful_shutdown: int = 3,
) -> int:
    """Run until SIGTERM/SIGINT; 0 once stopped, STARTUP_FAILURE if it never started."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        timeout_graceful_shutdown=timeout_graceful_shutdown,
    )
    server = ApiServer(config, app)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the SIGINT it handled, once stopped
        server.run()
    return 0 if server.started else STARTUP_FAILURE
