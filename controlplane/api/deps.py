"""Request dependencies: the runtime, the caller's identity per audience, common headers."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.dependencies.models import Dependant

from controlplane.api.origin import OriginDep, origin_of
from controlplane.api.schemas.common import ID_MAX_LENGTH, ID_PATTERN
from controlplane.domain.enums import KeyScope
from controlplane.domain.errors import Forbidden, Unauthorized
from controlplane.runtime import Runtime
from controlplane.services.audit import Origin
from controlplane.services.auth import Principal, PrincipalCache, authenticate, note_address


def get_runtime(request: Request) -> Runtime:
    runtime = request.app.state.runtime
    assert isinstance(runtime, Runtime)
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("missing Authorization: Bearer <API key>")
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <API key>'")
    return secret.strip()


def _principal(runtime: Runtime, authorization: str | None, origin: Origin) -> Principal:
    secret = _bearer(authorization)
    cache: PrincipalCache = runtime.principals
    principal = cache.get(secret)
    if principal is None:
        with runtime.read() as session:
            principal = authenticate(session, pepper=runtime.pepper, secret=secret)
        cache.put(secret, principal)
    if origin.address and not cache.address_noted(principal.key_id, origin.address):
        # A key's first request from an address (in this process) is a write: audited if new.
        with runtime.uow() as session:
            note_address(session, principal, origin)
        cache.note_address(principal.key_id, origin.address)
    return principal


_SCOPES: dict[Callable[..., Any], KeyScope] = {}


def _require(scope: KeyScope) -> Callable[..., Coroutine[Any, Any, Principal]]:
    async def dependency(
        request: Request,
        runtime: RuntimeDep,
        origin: OriginDep,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Principal:
        known = getattr(request.state, "principal", None)  # set by the route before it read the body
        if isinstance(known, Principal):
            principal = known
        else:
            principal = await run_in_threadpool(_principal, runtime, authorization, origin)
        if principal.scope is not scope:
            raise Forbidden(f"this route needs a {scope.value} key, not a {principal.scope.value} key")
        return principal

    _SCOPES[dependency] = scope
    return dependency


def required_scope(dependant: Dependant) -> KeyScope | None:
    """The key scope a route's dependencies ask for (None: the route takes no key)."""
    for sub in dependant.dependencies:
        if sub.call in _SCOPES:
            return _SCOPES[sub.call]
        found = required_scope(sub)
        if found is not None:
            return found
    return None


async def authenticate_early(request: Request, scope: KeyScope) -> None:
    """What the route's own dependency will check, done before the body is read (bodies.GuardedRoute)."""
    principal = await run_in_threadpool(
        _principal, get_runtime(request), request.headers.get("authorization"), origin_of(request)
    )
    if principal.scope is not scope:
        raise Forbidden(f"this route needs a {scope.value} key, not a {principal.scope.value} key")
    request.state.principal = principal


TenantPrincipal = Annotated[Principal, Depends(_require(KeyScope.TENANT))]
OperatorPrincipal = Annotated[Principal, Depends(_require(KeyScope.OPERATOR))]
AgentPrincipal = Annotated[Principal, Depends(_require(KeyScope.AGENT))]

IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$"),
]

# An id in a path or a query string (``wl_01J...``, or a name such as ``acme`` or ``rack-001``
# where a route takes either): refused (422) unless it has that shape, before any database sees it.
PathId = Annotated[str, Path(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)]
QueryId = Annotated[str | None, Query(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)]
