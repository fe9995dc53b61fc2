"""Who is calling: an API key resolved to its scope and owner, or a clear 401; and the first
use of a key from each client address, recorded in the audit log."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from controlplane.domain import audit as actions
from controlplane.domain import keys
from controlplane.domain.audit import ActorKind
from controlplane.domain.enums import KeyScope
from controlplane.domain.errors import Unauthorized
from controlplane.services.audit import Actor, AuditContext, Origin, record
from controlplane.store.models import ApiKey, CredentialAddress
from controlplane.store.types import utcnow


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


def check_active(session: Session, *, key_id: str) -> None:
    """401 unless the key still exists unrevoked: for a request that held on (a long poll) while
    its key may have been revoked, bypassing the cache of recent authentications."""
    row = session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None:
        raise Unauthorized("the API key is unknown or revoked")


def note_address(session: Session, principal: Principal, origin: Origin) -> bool:
    """Remember that ``principal``'s key was used from ``origin.address``; the first use from an
    address is audited (in this transaction). True when the address was new."""
    if not origin.address:
        return False
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    added = session.execute(
        insert(CredentialAddress)
        .values(key_id=principal.key_id, address=origin.address, first_seen_at=utcnow())
        .on_conflict_do_nothing(index_elements=["key_id", "address"])
        .returning(CredentialAddress.key_id)
    ).first()
    if added is None:  # seen before (by another process, or before a restart)
        return False
    record(
        session,
        AuditContext(Actor(ActorKind(principal.scope.value), principal.key_id), origin),
        action=actions.CREDENTIAL_USED_FROM_NEW_ADDRESS,
        target_kind=actions.TARGET_CREDENTIAL,
        target_id=principal.key_id,
        tenant_id=principal.tenant_id,
        detail={"kind": principal.scope.value, "address": origin.address, "node_id": principal.node_id},
    )
    return True


class PrincipalCache:
    """Recently authenticated keys, so a request costs one HMAC and no database round trip.

    Entries live ``ttl_s`` seconds: a key revoked through another replica stops working within
    that time; revoking through this process drops it at once (``forget_key``).

    It also remembers which (key, client address) pairs this process has already noted
    (``note_address``), so only a key's first request from an address costs a write.
    """

    def __init__(
        self, *, pepper: bytes, ttl_s: float, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._pepper = pepper
        self._ttl_s = ttl_s
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._addresses: set[tuple[str, str]] = set()

    def get(self, secret: str) -> Principal | None:
        if self._ttl_s <= 0:
            return None
        digest = keys.digest(secret, self._pepper)
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if entry[0] <= self._clock():
                del self._entries[digest]
                return None
            return entry[1]

    def put(self, secret: str, principal: Principal) -> None:
        if self._ttl_s <= 0:
            return
        digest = keys.digest(secret, self._pepper)
        with self._lock:
            if len(self._entries) >= self._max:
                self._entries.clear()  # bounded memory; the next requests simply look up again
            self._entries[digest] = (self._clock() + self._ttl_s, principal)

    def forget_key(self, key_id: str) -> None:
        with self._lock:
            for digest in [d for d, (_, p) in self._entries.items() if p.key_id == key_id]:
                del self._entries[digest]
            self._addresses = {pair for pair in self._addresses if pair[0] != key_id}

    def address_noted(self, key_id: str, address: str) -> bool:
        with self._lock:
            return (key_id, address) in self._addresses

    def note_address(self, key_id: str, address: str) -> None:
        with self._lock:
            if len(self._addresses) >= self._max:
                self._addresses.clear()  # bounded; a forgotten pair costs one idempotent insert
            self._addresses.add((key_id, address))
