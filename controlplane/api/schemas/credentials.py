"""Credentials (API keys of every scope, agents' join tokens) and the audit log, as operators
and tenants list them, plus the query strings of those lists."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Query
from pydantic import AwareDatetime, BaseModel

from controlplane.api.schemas.operator import KeyOut
from controlplane.domain.audit import MAX_ACTION
from controlplane.domain.enums import KeyScope
from controlplane.services.admin.keys import MAX_PAGE as MAX_KEY_PAGE
from controlplane.services.audit import MAX_PAGE as MAX_AUDIT_PAGE
from controlplane.services.audit.query import MAX_CURSOR

# Our ids are prefixed base32 (``key_01J...``); anything else cannot name a row.
ID_PATTERN = r"^[A-Za-z0-9_]{1,40}$"
# Key ids, join token ids, CLI users (printable ASCII), "system".
ACTOR_PATTERN = r"^[\x21-\x7e]{1,40}$"  # a key or token id, or cli:<OS user>
ACTION_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"  # domain.audit.is_action


class ApiKeyOut(KeyOut):
    tenant_id: str | None
    node_id: str | None
    # The key that replaced this one when it was rotated.
    replaced_by_id: str | None


class KeyPageOut(BaseModel):
    items: list[ApiKeyOut]
    next_cursor: str | None


class BootstrapTokenOut(BaseModel):
    id: str
    # Absent for tokens made before the audit log existed.
    display_prefix: str | None
    site_id: str
    rack_id: str | None
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    used_by_node_id: str | None
    revoked_at: datetime | None
    status: str  # active | expired | used | revoked
    # Present only in the response that created the token; never stored.
    secret: str | None = None


class BootstrapTokenPageOut(BaseModel):
    items: list[BootstrapTokenOut]
    next_cursor: str | None


class AuditEntryOut(BaseModel):
    id: int
    at: datetime
    actor_kind: str
    actor_id: str
    action: str
    target_kind: str
    target_id: str
    tenant_id: str | None
    address: str | None
    request_id: str | None
    detail: dict[str, Any]


class AuditPageOut(BaseModel):
    items: list[AuditEntryOut]
    # Pass as ``cursor`` for the next (older) page; null on the last one.
    next_cursor: int | None


@dataclass(frozen=True)
class KeyQuery:
    scope: KeyScope | None = None
    tenant_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None
    node_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None
    # true: unrevoked keys only; false: revoked ones only.
    active: bool | None = None
    limit: Annotated[int, Query(ge=1, le=MAX_KEY_PAGE)] = 50
    cursor: Annotated[str | None, Query(pattern=ID_PATTERN)] = None


@dataclass(frozen=True)
class TokenQuery:
    site_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None
    # true: neither used nor revoked (expired ones included); false: used or revoked.
    unused: bool | None = None
    limit: Annotated[int, Query(ge=1, le=MAX_KEY_PAGE)] = 50
    cursor: Annotated[str | None, Query(pattern=ID_PATTERN)] = None


@dataclass(frozen=True)
class AuditQuery:
    actor: Annotated[str | None, Query(pattern=ACTOR_PATTERN)] = None
    action: Annotated[str | None, Query(max_length=MAX_ACTION, pattern=ACTION_PATTERN)] = None
    tenant_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None
    target_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None
    # ISO 8601 with a time zone; since is inclusive, until exclusive.
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    limit: Annotated[int, Query(ge=1, le=MAX_AUDIT_PAGE)] = 50
    cursor: Annotated[int | None, Query(ge=1, le=MAX_CURSOR)] = None


@dataclass(frozen=True)
class PageQuery:
    limit: Annotated[int, Query(ge=1, le=MAX_AUDIT_PAGE)] = 50
    cursor: Annotated[int | None, Query(ge=1, le=MAX_CURSOR)] = None


@dataclass(frozen=True)
class OwnKeyQuery:
    active: bool | None = None
    limit: Annotated[int, Query(ge=1, le=MAX_KEY_PAGE)] = 50
    cursor: Annotated[str | None, Query(pattern=ID_PATTERN)] = None
