"""Who is calling: an API key resolved to its scope and owner, or a clear 401."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.domain import keys
from controlplane.domain.enums import KeyScope
from controlplane.domain.errors import Unauthorized
from controlplane.store.models import ApiKey


@dataclass(frozen=True)
class Principal:
    key_id: str
    scope: KeyScope
    tenant_id: str | None
    node_id: str | None


def authenticate(session: Session, *, pepper: bytes, secret: str) -> Principal:
    scope = keys.scope_of(secret)
    if scope is None:
        # Malformed or mistyped: refused without touching the database.
        raise Unauthorized("the API key is malformed")
    row = session.scalar(select(ApiKey).where(ApiKey.digest == keys.digest(secret, pepper)))
    if row is None or row.revoked_at is not None or row.scope != scope.value:
        raise Unauthorized("the API key is unknown or revoked")
    return Principal(key_id=row.id, scope=scope, tenant_id=row.tenant_id, node_id=row.node_id)
