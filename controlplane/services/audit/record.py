"""Recording an audit entry: in the caller's transaction, logged once that transaction commits.

``record`` adds the entry to the session the action itself runs in and flushes it at once, so
an entry that cannot be written fails the action with it: no action commits without its entry.
Each committed entry is then exported as one JSON log line (logger ``switchyard.audit``); an
entry rolled back with its action is never logged.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from controlplane.domain.audit import ActorKind, is_action
from controlplane.domain.errors import InvalidRequest
from controlplane.store.models import AuditEntry
from controlplane.store.types import utcnow

log = logging.getLogger("switchyard.audit")
_PENDING = "audit_entries"


@dataclass(frozen=True)
class Actor:
    kind: ActorKind
    id: str  # a key id, a join token id, an OS user, "system"


@dataclass(frozen=True)
class Origin:
    """Where a request came from: the client's address and the request's id (both optional)."""

    address: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class AuditContext:
    """Who acts, and from where: what every audited use case is given by its shell."""

    actor: Actor
    origin: Origin = Origin()


# The control plane acting on its own (the demo's seed, a test's fixtures, the dispatcher).
SYSTEM = AuditContext(Actor(ActorKind.SYSTEM, "system"))
NO_ORIGIN = Origin()


def record(
    session: Session,
    context: AuditContext,
    *,
    action: str,
    target_kind: str = "",
    target_id: str = "",
    tenant_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one entry in ``session``'s transaction (flushed now: a bad entry fails the action)."""
    if not is_action(action):
        raise InvalidRequest(f"not an audit action name: {action!r}")
    entry = AuditEntry(
        at=utcnow(),
        actor_kind=context.actor.kind.value,
        actor_id=context.actor.id,
        action=action,
        target_kind=target_kind,
        target_id=target_id,
        tenant_id=tenant_id,
        address=context.origin.address,
        request_id=context.origin.request_id,
        detail=_plain(detail or {}),
    )
    session.add(entry)
    session.flush()
    session.info.setdefault(_PENDING, []).append(as_dict(entry))
    return entry


def as_dict(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": entry.at.isoformat(),
        "actor_kind": entry.actor_kind,
        "actor_id": entry.actor_id,
        "action": entry.action,
        "target_kind": entry.target_kind,
        "target_id": entry.target_id,
        "tenant_id": entry.tenant_id,
        "address": entry.address,
        "request_id": entry.request_id,
        "detail": entry.detail,
    }


def _plain(value: Any) -> Any:
    """JSON-ready: decimals, enums and non-finite floats as strings, datetimes in ISO 8601."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no infinity: PostgreSQL would refuse the entry
    return value


@event.listens_for(Session, "after_commit")
def _export(session: Session) -> None:
    for entry in session.info.pop(_PENDING, ()):
        log.info(json.dumps(entry, sort_keys=True, separators=(",", ":")), extra={"audit": entry})


@event.listens_for(Session, "after_rollback")
def _discard(session: Session) -> None:
    session.info.pop(_PENDING, None)
