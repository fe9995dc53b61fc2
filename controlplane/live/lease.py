"""Leader election for a fenced singleton role (the scheduler, the dispatcher): a Redis lease
that says who should lead, holding the fencing epoch the leader claimed in the database.

Redis only arbitrates who may claim an epoch: the epochs themselves come from the role's fence
row in the database (``services.singleton``), never from a Redis counter, so a Redis that lost
its keys (a flush, a restart without persistence, a restore of an old snapshot) can never hand
out an epoch again (DESIGN invariant 7). The lease alone is not safety (a paused process can
outlive it; Jepsen on etcd): the fence is.
"""

from __future__ import annotations

import uuid

import redis

from controlplane.live.keys import Keys

# The lease value is "<instance>:<epoch>"; "<instance>:" while its epoch is being claimed.
_TAKE = """
if redis.call('SET', KEYS[1], ARGV[1] .. ':', 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
"""

_CONFIRM = """
local value = redis.call('GET', KEYS[1])
if value and string.sub(value, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. ':' then
  redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[3], 'PX', ARGV[2])
  return 1
end
return 0
"""

_RENEW = """
local value = redis.call('GET', KEYS[1])
if value and string.sub(value, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. ':' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_RELEASE = """
local value = redis.call('GET', KEYS[1])
if value and string.sub(value, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. ':' then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

SCHEDULER = "scheduler"
DISPATCHER = "dispatcher"


class LeaderLease:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        lease_s: float,
        role: str = SCHEDULER,
        instance: str | None = None,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.role = role
        self.lease_ms = int(lease_s * 1000)
        self.instance = instance or uuid.uuid4().hex
        self.epoch: int | None = None
        self._take = client.register_script(_TAKE)
        self._confirm = client.register_script(_CONFIRM)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def take(self) -> bool:
        """Take the lease if nobody holds it (its epoch is still to be claimed: ``confirm``)."""
        self.epoch = None
        return bool(self._take(keys=[self.keys.leader(self.role)], args=[self.instance, self.lease_ms]))

    def confirm(self, epoch: int) -> bool:
        """Record the epoch claimed for this lease, if the lease is still ours; then we lead."""
        ok = bool(self._confirm(keys=[self.keys.leader(self.role)], args=[self.instance, self.lease_ms, epoch]))
        self.epoch = epoch if ok else None
        return ok

    def renew(self) -> bool:
        ok = bool(self._renew(keys=[self.keys.leader(self.role)], args=[self.instance, self.lease_ms]))
        if not ok:
            self.epoch = None
        return ok

    def release(self) -> None:
        self.epoch = None
        self._release(keys=[self.keys.leader(self.role)], args=[self.instance])
