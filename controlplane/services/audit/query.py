"""Reading the audit log: newest first, filtered, one statement per page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.domain.audit import TARGET_CREDENTIAL
from controlplane.domain.errors import InvalidRequest
from controlplane.store.models import AuditEntry

MAX_PAGE = 200
MAX_CURSOR = 2**63 - 1


@dataclass(frozen=True)
class AuditFilter:
    actor_id: str | None = None
    action: str | None = None
    tenant_id: str | None = None
    target_id: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


@dataclass(frozen=True)
class AuditPage:
    items: list[AuditEntry]
    next_cursor: int | None


def page(session: Session, *, where: AuditFilter, limit: int, cursor: int | None) -> AuditPage:
    """Newest first; ``cursor`` is the ``next_cursor`` of the previous page. One statement."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}")
    if cursor is not None and not 1 <= cursor <= MAX_CURSOR:
        raise InvalidRequest(f"cursor must be between 1 and {MAX_CURSOR}")
    for name, when in (("since", where.since), ("until", where.until)):
        if when is not None and when.tzinfo is None:
            raise InvalidRequest(f"{name} needs a time zone (e.g. 2026-12-08T10:00:00Z)")
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit + 1)
    if where.actor_id is not None:
        query = query.where(AuditEntry.actor_id == where.actor_id)
    if where.action is not None:
        query = query.where(AuditEntry.action == where.action)
    if where.tenant_id is not None:
        query = query.where(AuditEntry.tenant_id == where.tenant_id)
    if where.target_id is not None:
        query = query.where(AuditEntry.target_id == where.target_id)
    if where.since is not None:
        query = query.where(AuditEntry.at >= where.since)
    if where.until is not None:
        query = query.where(AuditEntry.at < where.until)
    if cursor is not None:
        query = query.where(AuditEntry.id < cursor)
    rows = list(session.scalars(query))
    next_cursor = rows[limit - 1].id if len(rows) > limit else None
    return AuditPage(rows[:limit], next_cursor)


def tenant_page(session: Session, *, tenant_id: str, limit: int, cursor: int | None) -> AuditPage:
    """What a tenant may read: the entries about its own keys (created, used, revoked, rotated)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}")
    if cursor is not None and not 1 <= cursor <= MAX_CURSOR:
        raise InvalidRequest(f"cursor must be between 1 and {MAX_CURSOR}")
    query = (
        select(AuditEntry)
        .where(AuditEntry.tenant_id == tenant_id, AuditEntry.target_kind == TARGET_CREDENTIAL)
        .order_by(AuditEntry.id.desc())
        .limit(limit + 1)
    )
    if cursor is not None:
        query = query.where(AuditEntry.id < cursor)
    rows = list(session.scalars(query))
    next_cursor = rows[limit - 1].id if len(rows) > limit else None
    return AuditPage(rows[:limit], next_cursor)
