"""API keys (shown once, stored as an HMAC) and agents' single-use bootstrap tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from controlplane.domain import keys
from controlplane.domain.enums import KeyScope
from controlplane.domain.errors import InvalidRequest, NotFound
from controlplane.domain.ids import new_id
from controlplane.services.admin.sites import get_rack, get_site
from controlplane.store.models import ApiKey, BootstrapToken
from controlplane.store.types import utcnow


@dataclass(frozen=True)
class IssuedKey:
    key: ApiKey
    secret: str  # shown once, never stored


def issue_api_key(
    session: Session,
    *,
    pepper: bytes,
    scope: KeyScope,
    name: str = "",
    tenant_id: str | None = None,
    node_id: str | None = None,
) -> IssuedKey:
    if scope is KeyScope.TENANT and tenant_id is None:
        raise InvalidRequest("a tenant key needs a tenant")
    if scope is KeyScope.AGENT and node_id is None:
        raise InvalidRequest("an agent key needs a node")
    secret = keys.generate(scope)
    row = ApiKey(
        id=new_id("key"),
        scope=scope.value,
        name=name,
        tenant_id=tenant_id,
        node_id=node_id,
        display_prefix=keys.display_prefix(secret),
        digest=keys.digest(secret, pepper),
    )
    session.add(row)
    session.flush()
    return IssuedKey(row, secret)


def revoke_api_key(session: Session, *, key_id: str, tenant_id: str | None = None) -> ApiKey:
    row = session.get(ApiKey, key_id)
    if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
        raise NotFound(f"no API key {key_id!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row


def issue_bootstrap_token(
    session: Session, *, pepper: bytes, site_name: str, rack: str | None, ttl_s: float
) -> tuple[BootstrapToken, str]:
    site = get_site(session, site_name)
    rack_row = get_rack(session, site, rack) if rack else None
    secret = keys.generate_bootstrap_token()
    row = BootstrapToken(
        id=new_id("boot"),
        digest=keys.digest(secret, pepper),
        site_id=site.id,
        rack_id=rack_row.id if rack_row else None,
        expires_at=utcnow() + timedelta(seconds=ttl_s),
    )
    session.add(row)
    session.flush()
    return row, secret
