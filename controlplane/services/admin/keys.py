"""Credentials: API keys of every scope (tenant, operator, agent: shown once, stored as an HMAC)
and agents' single-use join (bootstrap) tokens. Listed, revoked and rotated here; every event
is recorded in the audit log in the transaction that makes it.

Rotation issues a successor with the same scope, owner and name and revokes the old secret at
once, in one transaction: there is no overlap, because rotation is what an operator does when
a secret may have leaked, and an overlap would leave the thief a window. A planned change
without downtime is create-then-revoke (two calls, the overlap the operator chooses). A key is
rotated at most once (its ``replaced_by_id`` names the successor); a revoked key not yet
replaced can still be rotated, which is how a node whose stolen credential was revoked in a
hurry gets a new one (a node cannot register twice: its GPUs are already known).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.domain import audit as actions
from controlplane.domain import keys
from controlplane.domain.audit import CredentialKind
from controlplane.domain.enums import KeyScope
from controlplane.domain.errors import Conflict, InvalidRequest, NotFound
from controlplane.domain.ids import new_id
from controlplane.services.admin.sites import get_rack, get_site
from controlplane.services.audit import SYSTEM, AuditContext, record
from controlplane.store.models import ApiKey, BootstrapToken
from controlplane.store.types import utcnow

MAX_PAGE = 200


@dataclass(frozen=True)
class IssuedKey:
    key: ApiKey
    secret: str  # shown once, never stored


def _audit_key(session: Session, context: AuditContext, action: str, key: ApiKey, **detail: object) -> None:
    record(
        session,
        context,
        action=action,
        target_kind=actions.TARGET_CREDENTIAL,
        target_id=key.id,
        tenant_id=key.tenant_id,
        detail={"kind": key.scope, "name": key.name, "node_id": key.node_id, **detail},
    )


def _new_key(
    session: Session, *, pepper: bytes, scope: KeyScope, name: str, tenant_id: str | None, node_id: str | None
) -> IssuedKey:
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


def issue_api_key(
    session: Session,
    *,
    pepper: bytes,
    scope: KeyScope,
    name: str = "",
    tenant_id: str | None = None,
    node_id: str | None = None,
    audit: AuditContext = SYSTEM,
) -> IssuedKey:
    if scope is KeyScope.TENANT and tenant_id is None:
        raise InvalidRequest("a tenant key needs a tenant")
    if scope is KeyScope.AGENT and node_id is None:
        raise InvalidRequest("an agent key needs a node")
    issued = _new_key(session, pepper=pepper, scope=scope, name=name, tenant_id=tenant_id, node_id=node_id)
    _audit_key(session, audit, actions.CREDENTIAL_CREATED, issued.key)
    return issued


def get_api_key(session: Session, *, key_id: str, tenant_id: str | None = None, lock: bool = False) -> ApiKey:
    """Another tenant's key answers exactly like a missing one."""
    row = session.get(ApiKey, key_id, with_for_update=lock or None, populate_existing=lock)
    if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
        raise NotFound(f"no API key {key_id!r}")
    return row


def revoke_api_key(
    session: Session, *, key_id: str, tenant_id: str | None = None, audit: AuditContext = SYSTEM
) -> ApiKey:
    """Revoke at once (idempotent: revoking a revoked key changes nothing and records nothing)."""
    row = get_api_key(session, key_id=key_id, tenant_id=tenant_id, lock=True)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
        _audit_key(session, audit, actions.CREDENTIAL_REVOKED, row)
    return row


def rotate_api_key(
    session: Session, *, pepper: bytes, key_id: str, tenant_id: str | None = None, audit: AuditContext = SYSTEM
) -> IssuedKey:
    """A successor (same scope, owner, name), returned once; the old secret stops working now."""
    old = get_api_key(session, key_id=key_id, tenant_id=tenant_id, lock=True)
    if old.replaced_by_id is not None:
        raise Conflict(f"API key {old.id} was already rotated; its successor is {old.replaced_by_id}")
    was_active = old.revoked_at is None
    issued = _new_key(
        session, pepper=pepper, scope=KeyScope(old.scope), name=old.name, tenant_id=old.tenant_id, node_id=old.node_id
    )
    old.revoked_at = old.revoked_at or utcnow()
    old.replaced_by_id = issued.key.id
    session.flush()
    _audit_key(session, audit, actions.CREDENTIAL_ROTATED, old, new_credential_id=issued.key.id, was_active=was_active)
    return issued


@dataclass(frozen=True)
class KeyFilter:
    scope: KeyScope | None = None
    tenant_id: str | None = None
    node_id: str | None = None
    active: bool | None = None  # True: not revoked; False: revoked


@dataclass(frozen=True)
class KeyPage:
    items: list[ApiKey]
    next_cursor: str | None


def list_api_keys(session: Session, *, where: KeyFilter, limit: int, cursor: str | None) -> KeyPage:
    """Newest first (ids are time-ordered); ``cursor`` is the previous page's last id. One statement."""
    _check_page(limit)
    query = select(ApiKey).order_by(ApiKey.id.desc()).limit(limit + 1)
    if where.scope is not None:
        query = query.where(ApiKey.scope == where.scope.value)
    if where.tenant_id is not None:
        query = query.where(ApiKey.tenant_id == where.tenant_id)
    if where.node_id is not None:
        query = query.where(ApiKey.node_id == where.node_id)
    if where.active is True:
        query = query.where(ApiKey.revoked_at.is_(None))
    elif where.active is False:
        query = query.where(ApiKey.revoked_at.is_not(None))
    if cursor is not None:
        query = query.where(ApiKey.id < cursor)
    rows = list(session.scalars(query))
    return KeyPage(rows[:limit], rows[limit - 1].id if len(rows) > limit else None)


def node_credentials(session: Session, node_ids: list[str]) -> dict[str, str]:
    """Each node's live (unrevoked) credential id: one statement for any number of nodes."""
    if not node_ids:
        return {}
    rows = session.execute(
        select(ApiKey.node_id, ApiKey.id)
        .where(ApiKey.node_id.in_(node_ids), ApiKey.revoked_at.is_(None))
        .order_by(ApiKey.id)
    ).all()
    return {node_id: key_id for node_id, key_id in rows if node_id is not None}


def _check_page(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}")


# Join tokens -------------------------------------------------------------------------------


def token_status(row: BootstrapToken, now: datetime | None = None) -> str:
    """used | revoked | expired | active."""
    if row.used_at is not None:
        return "used"
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at <= (now or utcnow()):
        return "expired"
    return "active"


def _audit_token(session: Session, context: AuditContext, action: str, row: BootstrapToken, **detail: object) -> None:
    record(
        session,
        context,
        action=action,
        target_kind=actions.TARGET_CREDENTIAL,
        target_id=row.id,
        detail={
            "kind": CredentialKind.BOOTSTRAP.value,
            "site_id": row.site_id,
            "rack_id": row.rack_id,
            "expires_at": row.expires_at,
            **detail,
        },
    )


def _new_token(
    session: Session, *, pepper: bytes, site_id: str, rack_id: str | None, ttl_s: float
) -> tuple[BootstrapToken, str]:
    secret = keys.generate_bootstrap_token()
    row = BootstrapToken(
        id=new_id("boot"),
        digest=keys.digest(secret, pepper),
        display_prefix=keys.display_prefix(secret),
        site_id=site_id,
        rack_id=rack_id,
        expires_at=utcnow() + timedelta(seconds=ttl_s),
    )
    session.add(row)
    session.flush()
    return row, secret


def issue_bootstrap_token(
    session: Session,
    *,
    pepper: bytes,
    site_name: str,
    rack: str | None,
    ttl_s: float,
    audit: AuditContext = SYSTEM,
) -> tuple[BootstrapToken, str]:
    site = get_site(session, site_name)
    rack_row = get_rack(session, site, rack) if rack else None
    row, secret = _new_token(
        session, pepper=pepper, site_id=site.id, rack_id=rack_row.id if rack_row else None, ttl_s=ttl_s
    )
    _audit_token(session, audit, actions.CREDENTIAL_CREATED, row)
    return row, secret


def get_bootstrap_token(session: Session, token_id: str, *, lock: bool = False) -> BootstrapToken:
    row = session.get(BootstrapToken, token_id, with_for_update=lock or None, populate_existing=lock)
    if row is None:
        raise NotFound(f"no bootstrap token {token_id!r}")
    return row


def revoke_bootstrap_token(session: Session, *, token_id: str, audit: AuditContext = SYSTEM) -> BootstrapToken:
    """An unused token can no longer register a node (idempotent; a used one has nothing to revoke)."""
    row = get_bootstrap_token(session, token_id, lock=True)
    if row.used_at is None and row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
        _audit_token(session, audit, actions.CREDENTIAL_REVOKED, row)
    return row


def rotate_bootstrap_token(
    session: Session, *, pepper: bytes, token_id: str, audit: AuditContext = SYSTEM
) -> tuple[BootstrapToken, str]:
    """A fresh token for the same site and rack with the same lifetime; the old one is revoked now.

    An unused token (active or expired) can be rotated; a used or revoked one cannot (409).
    """
    old = get_bootstrap_token(session, token_id, lock=True)
    status = token_status(old)
    if status in ("used", "revoked"):
        raise Conflict(f"bootstrap token {old.id} is {status}: issue a new one instead")
    ttl_s = max((old.expires_at - old.created_at).total_seconds(), 1.0)
    new, secret = _new_token(session, pepper=pepper, site_id=old.site_id, rack_id=old.rack_id, ttl_s=ttl_s)
    old.revoked_at = utcnow()
    session.flush()
    _audit_token(session, audit, actions.CREDENTIAL_ROTATED, old, new_credential_id=new.id)
    return new, secret


@dataclass(frozen=True)
class TokenPage:
    items: list[BootstrapToken]
    next_cursor: str | None


def list_bootstrap_tokens(
    session: Session, *, site_id: str | None, unused: bool | None, limit: int, cursor: str | None
) -> TokenPage:
    """Newest first. ``unused``: True lists tokens neither used nor revoked (expired ones included)."""
    _check_page(limit)
    query = select(BootstrapToken).order_by(BootstrapToken.id.desc()).limit(limit + 1)
    if site_id is not None:
        query = query.where(BootstrapToken.site_id == site_id)
    if unused is True:
        query = query.where(BootstrapToken.used_at.is_(None), BootstrapToken.revoked_at.is_(None))
    elif unused is False:
        query = query.where((BootstrapToken.used_at.is_not(None)) | (BootstrapToken.revoked_at.is_not(None)))
    if cursor is not None:
        query = query.where(BootstrapToken.id < cursor)
    rows = list(session.scalars(query))
    return TokenPage(rows[:limit], rows[limit - 1].id if len(rows) > limit else None)
