"""The audit log: append-only entries of who did what, when, from where, under which request.

Append-only three times over: the code has no update or delete path (the ORM refuses both on
this model), and the database refuses them too, with triggers created by migration 0005 (on
PostgreSQL also TRUNCATE). A later migration that rebuilds this table on SQLite (batch mode)
must create the triggers again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, event
from sqlalchemy.orm import Mapped, Mapper, mapped_column

from controlplane.domain.audit import ActorKind
from controlplane.store.models.base import Base, one_of
from controlplane.store.types import UTCDateTime, utcnow

# SQLite autoincrements only an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
SEQ = BigInteger().with_variant(Integer(), "sqlite")


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (
        one_of("actor_kind", ActorKind),
        CheckConstraint("length(action) BETWEEN 3 AND 64", name="action_length"),
        CheckConstraint("length(actor_id) BETWEEN 1 AND 64", name="actor_id_length"),
        CheckConstraint("request_id IS NULL OR length(request_id) BETWEEN 1 AND 128", name="request_id_length"),
        CheckConstraint("address IS NULL OR length(address) BETWEEN 1 AND 64", name="address_length"),
        Index("ix_audit_log_actor_id_id", "actor_id", "id"),
        Index("ix_audit_log_action_id", "action", "id"),
        Index("ix_audit_log_tenant_id_id", "tenant_id", "id"),
        Index("ix_audit_log_at", "at"),
    )
    # The order entries were written in: the cursor of every page.
    id: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor_kind: Mapped[str] = mapped_column(String(16))
    # A key id, a join token id, the OS user of a CLI run, or "system".
    actor_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target_kind: Mapped[str] = mapped_column(String(32), default="")
    target_id: Mapped[str] = mapped_column(String(64), default="")
    # The tenant the entry is about (its keys, its policy), so a tenant can read its own entries.
    tenant_id: Mapped[str | None] = mapped_column(String(40))
    # The client's address as the API saw it ("local" for the CLI), and the request's id.
    address: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(128))
    # What changed: small, JSON, never a secret.
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class CredentialAddress(Base):
    """Every client address a credential has been used from (its first use from each is audited)."""

    __tablename__ = "credential_addresses"
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True)
    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


def _refuse(verb: str) -> Any:
    def listener(_mapper: Mapper[Any], _connection: Any, target: AuditEntry) -> None:
        raise PermissionError(f"the audit log is append-only: refusing to {verb} entry {target.id}")

    return listener


event.listen(AuditEntry, "before_update", _refuse("update"))
event.listen(AuditEntry, "before_delete", _refuse("delete"))
