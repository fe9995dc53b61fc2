"""RFC 9457 problem+json for every error the API returns, 4xx and (never expected) 5xx."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controlplane.domain.errors import DomainError

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        return problem(exc.status, exc.title, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": _location(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        if any(e["type"] == "json_invalid" for e in errors):
            return problem(400, "Malformed JSON", "the request body is not valid JSON", errors=errors)
        summary = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors[:5])
        return problem(422, "Invalid request", summary, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Error")
        return problem(exc.status_code, title, str(exc.detail))

    @app.exception_handler(OperationalError)
    async def _database(request: Request, exc: OperationalError) -> JSONResponse:
        # The database is down or busy: the client should retry, and the SRE sees it in the log.
        log.error("database unavailable on %s %s: %s", request.method, request.url.path, exc.orig)
        response = problem(503, "Service unavailable", "the database is unavailable; retry shortly")
        response.headers["Retry-After"] = "2"
        return response

    # Unexpected errors: answered by EdgeMiddleware, around the routes and their handlers above.
    app.add_middleware(EdgeMiddleware)


class EdgeMiddleware:
    """The outermost edge of the API, inside Starlette's own last-resort handler.

    - An unexpected error is answered 500 problem+json with ``Connection: close`` and logged, and
      goes no further: Starlette's handler would re-raise it and uvicorn would then drop the
      connection without saying so, so a pooled client's next call on it failed with a reset.
    - Any response that starts before the request's body was all read (a 401, 413 or 415 that
      refused it unread, a route that takes no body) says ``Connection: close``: the server does
      not read the rest of the upload, and the client knows not to reuse the connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"").strip()
        unread = (length.isdigit() and int(length) > 0) or (not length and b"transfer-encoding" in headers)
        started = False

        async def receive_tracked() -> Message:
            nonlocal unread
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                unread = False
            return message

        async def send_marked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if unread:
                    MutableHeaders(scope=message)["Connection"] = "close"
            await send(message)

        try:
            await self.app(scope, receive_tracked, send_marked)
        except Exception as exc:  # noqa: BLE001 - the last place an error can be answered properly
            if started:
                raise  # nothing can be said any more: uvicorn closes the connection
            log.error("unhandled error on %s %s", scope.get("method"), scope.get("path"), exc_info=exc)
            response = problem(500, "Internal error", "the server failed; the error was logged")
            response.headers["Connection"] = "close"
            await response(scope, receive, send)


REDIS_RETRY_AFTER_S = 2


def install_redis(app: FastAPI) -> None:
    """Redis down or refusing: 503 problem+json with Retry-After, as for the database.

    Only routes that need Redis to answer get here (a report renews the node's lease in it, the
    fleet views read live samples from it); a unit of work that committed never does: its
    wake-ups are sent after the commit and retried when Redis fails (``live.bus``).
    """

    @app.exception_handler(RedisError)
    async def _redis(request: Request, exc: RedisError) -> JSONResponse:
        log.error("Redis unavailable on %s %s: %s", request.method, request.url.path, exc)
        response = problem(503, "Service unavailable", "live state (Redis) is unavailable; retry shortly")
        response.headers["Retry-After"] = str(REDIS_RETRY_AFTER_S)
        return response
