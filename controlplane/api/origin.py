"""Where a request came from, and who makes it, as the audit log records them."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from controlplane.api.request_id import request_id
from controlplane.domain.audit import ActorKind
from controlplane.services.audit import Actor, AuditContext, Origin
from controlplane.services.auth import Principal

MAX_ADDRESS = 64


def origin_of(request: Request) -> Origin:
    """The client's address as the server saw it (a proxy's X-Forwarded-For is not trusted here)."""
    address = request.client.host[:MAX_ADDRESS] if request.client and request.client.host else None
    return Origin(address=address, request_id=request_id(request))


OriginDep = Annotated[Origin, Depends(origin_of)]


def acting(principal: Principal, origin: Origin) -> AuditContext:
    """The audit context of a request made with ``principal``'s key."""
    return AuditContext(Actor(ActorKind(principal.scope.value), principal.key_id), origin)
