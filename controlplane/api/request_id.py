"""X-Request-ID: every response carries one, and the audit log records it.

A caller's own id is echoed when it is sane (1 to 128 characters of ``A-Z a-z 0-9 . _ : - / + = @``);
anything else (absent, too long, spaces, control characters) is replaced by a generated one, never
refused: it is a tracing aid, not input. A pure ASGI middleware, so streaming bodies pass untouched.
"""

from __future__ import annotations

import re
import uuid

from fastapi import FastAPI, Request
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "X-Request-ID"
_RAW = HEADER.lower().encode()
_SANE = re.compile(rb"[A-Za-z0-9._:\-/+=@]{1,128}")


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope["headers"] if name == _RAW), b"")
        request_id = given.decode("ascii") if _SANE.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)


def request_id(request: Request) -> str | None:
    value = getattr(request.state, "request_id", None)
    return value if isinstance(value, str) else None


def install(app: FastAPI) -> None:
    app.add_middleware(RequestIdMiddleware)
