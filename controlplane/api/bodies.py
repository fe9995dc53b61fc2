"""What a request must be before any route reads its body, and how the body is read.

Every route of the API is a ``GuardedRoute``. Before FastAPI reads a byte of the body, it

1. authenticates the caller when the route needs a key (401/403 before the body is read, so an
   anonymous client cannot make the API buffer or parse anything);
2. refuses a body that is not ``application/json`` (optionally ``charset=utf-8``): 415;
3. refuses a body larger than the route's limit: at once from ``Content-Length``, or as soon as
   a chunked body passes it (413). The limit is per route (``body_limit``, shown in the OpenAPI
   document as ``x-max-body-bytes``), ``DEFAULT_BODY_BYTES`` otherwise;

and then parses it strictly (``parse_json``): UTF-8 only, no duplicate keys, no ``NaN`` or
``Infinity`` (nor a number too large to be finite), no integer outside 64 bits, no nesting
deeper than ``MAX_DEPTH``, no NUL and no unpaired surrogate in any string or key (neither
database can store them; PostgreSQL answered 500). A body above ``THREAD_PARSE_BYTES`` is
parsed in a worker thread, so a large one cannot stall the event loop (the long polls and
``/healthz``).

A response sent before the request's body was read says ``Connection: close``
(``problems.EdgeMiddleware``): the server does not read the rest of a refused upload.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from math import isfinite
from typing import Any

from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from controlplane.api import deps
from controlplane.domain.errors import DomainError, InvalidRequest

KIB = 1024
MIB = 1024 * KIB

# A body for a route that says nothing: cancel and cordon reasons, tenant names, key names, policy.
DEFAULT_BODY_BYTES = 16 * KIB
# A workload: its command and env are bounded to 64 KiB each once decoded (schemas.tenant), which
# JSON's \u escapes can make up to six times longer on the wire.
WORKLOAD_BODY_BYTES = 1 * MIB
# An agent's registration: up to 64 GPUs of inventory (a GB300 tray has 4).
REGISTER_BODY_BYTES = 256 * KIB
# A report: up to 64 GPUs of telemetry, 256 assignments and 1024 XID events.
REPORT_BODY_BYTES = 2 * MIB
# A batch of spooled reports (protocol 3); the agent fills one up to this size.
REPORT_BATCH_BODY_BYTES = 8 * MIB
# A log upload: the agent sends at most 2 MiB of log bytes a request (agents.logship), base64.
LOG_BODY_BYTES = 4 * MIB

THREAD_PARSE_BYTES = 64 * KIB
MAX_DEPTH = 32
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
LIMIT_KEY = "x-max-body-bytes"

# Neither database stores a NUL; an unpaired surrogate cannot be encoded as UTF-8 at all.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class PayloadTooLarge(DomainError):
    status = 413
    title = "Content too large"


class UnsupportedMediaType(DomainError):
    status = 415
    title = "Unsupported media type"


class MalformedBody(DomainError):
    status = 400
    title = "Malformed JSON"


def body_limit(max_bytes: int) -> dict[str, Any]:
    """``openapi_extra`` for a route whose body may be larger (or must be smaller) than the default."""
    return {LIMIT_KEY: max_bytes}


def is_json(content_type: str | None) -> bool:
    """``application/json``, with no parameter but ``charset=utf-8``."""
    if not content_type:
        return False
    media, *params = content_type.split(";")
    if media.strip().lower() != "application/json":
        return False
    for param in params:
        name, _, value = param.partition("=")
        if not param.strip():
            continue
        if name.strip().lower() != "charset" or value.strip().strip('"').lower() != "utf-8":
            return False
    return True


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def has_body(request: Request) -> bool:
    declared = _declared_length(request)
    return bool(declared) or (declared is None and "transfer-encoding" in request.headers)


class _Refused(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a number JSON allows")


def _number_refused(value: int | float) -> str | None:
    if type(value) is float and not isfinite(value):
        return "a number too large to be finite"
    if type(value) is int and not INT64_MIN <= value <= INT64_MAX:
        return "an integer outside 64 bits"
    return None


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused(f"the key {key[:64]!r} appears more than once")
            seen.add(key)
    return out


def _where(path: tuple[str | int, ...]) -> str:
    return ".".join(["body", *(str(p)[:64] for p in path)])  # keys are the client's: kept short


# A NUL or a surrogate can only come from a \u escape: strict JSON refuses a raw control
# character, and the UTF-8 decoder refuses an encoded surrogate. Without one, no string need be
# looked at (an escaped backslash before "u0000" only costs the look).
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")


def _check_scalar(value: Any, path: tuple[str | int, ...], strings: bool) -> None:
    kind = type(value)
    if kind is str:
        if strings and _UNSTORABLE.search(value):
            raise InvalidRequest(f"{_where(path)}: a NUL character or an unpaired surrogate is not allowed")
    elif (kind is int or kind is float) and (refused := _number_refused(value)):
        raise InvalidRequest(f"{_where(path)}: {refused}")


def _check_tree(value: Any, *, strings: bool) -> None:
    """Depth, numbers, and (if ``strings``) storable strings and keys: a loop over the
    containers, each item looked at once, so a 1 MiB body of half a million numbers costs a few
    tens of milliseconds (hooks in the parser cost several times that)."""
    if type(value) is not dict and type(value) is not list:
        _check_scalar(value, (), strings)
        return
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        container, path = stack.pop()
        if len(path) >= MAX_DEPTH:
            raise InvalidRequest(f"{_where(path)}: nested deeper than {MAX_DEPTH} levels")
        items = container.items() if type(container) is dict else enumerate(container)
        for key, child in items:
            kind = type(child)
            if kind is dict or kind is list:
                stack.append((child, (*path, key)))
            elif kind is int:
                if not INT64_MIN <= child <= INT64_MAX:
                    _check_scalar(child, (*path, key), strings)
            elif kind is float:
                if not isfinite(child):
                    _check_scalar(child, (*path, key), strings)
            elif strings and kind is str:
                _check_scalar(child, (*path, key), strings)
            if strings and type(key) is str and _UNSTORABLE.search(key):
                raise InvalidRequest(f"{_where(path)}: a key holds a NUL character or an unpaired surrogate")


def parse_json(body: bytes) -> Any:
    """The body as JSON, strictly (see the module's docstring); a DomainError says what is wrong."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody(f"the request body is not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text, object_pairs_hook=_unique, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise MalformedBody(f"the request body is not valid JSON: {exc.msg} (at {exc.pos})") from None
    except _Refused as exc:
        raise InvalidRequest(f"body: {exc}") from None
    except RecursionError:
        raise InvalidRequest(f"body: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:  # an integer of more digits than Python converts (4300)
        raise InvalidRequest("body: an integer outside 64 bits") from None
    _check_tree(value, strings=_SUSPECT_ESCAPE.search(text) is not None)
    return value


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or PayloadTooLarge as soon as it passes ``limit`` (declared or streamed)."""
    declared = _declared_length(request)
    too_large = PayloadTooLarge(f"the body of {request.method} {request.url.path} is limited to {limit} bytes")
    if declared is not None and declared > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


class GuardedRoute(APIRoute):
    """An APIRoute that authenticates, checks the media type and the size, and parses strictly
    before FastAPI reads the body (the module's docstring says in which order)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        needs = deps.required_scope(self.dependant)
        takes_body = self.body_field is not None
        limit = int((self.openapi_extra or {}).get(LIMIT_KEY, DEFAULT_BODY_BYTES))

        async def guarded(request: Request) -> Response:
            if needs is not None:
                await deps.authenticate_early(request, needs)
            if not takes_body:
                # Never read: the response says Connection: close if one was sent.
                return await handler(request)
            if has_body(request) and not is_json(request.headers.get("content-type")):
                raise UnsupportedMediaType("the request body must be application/json (charset utf-8)")
            try:
                body = await read_body(request, limit)
            except ClientDisconnect:
                return Response(status_code=400)  # nobody is left to read it
            if body:
                parsed = await (run_in_threadpool if len(body) > THREAD_PARSE_BYTES else _inline)(parse_json, body)
                # Starlette's Request caches what it read here; FastAPI's handler reads it back.
                request._json = parsed
            request._body = body
            return await handler(request)

        return guarded


async def _inline(fn: Callable[[bytes], Any], body: bytes) -> Any:
    return fn(body)
