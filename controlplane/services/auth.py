"""Who is calling: an API key resolved to its scope and owner, or a clear 401."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
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


class PrincipalCache:
    """Recently authenticated keys, so a request costs one HMAC and no database round trip.

    Entries live ``ttl_s`` seconds: a key revoked through another replica stops working within
    that time; revoking through this process drops it at once (``forget_key``).
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
