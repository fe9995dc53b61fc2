"""Leader election for a fenced singleton role (the scheduler, the dispatcher): a Redis lease
plus a fencing epoch.

Acquiring the lease increments the role's epoch (the fencing token). Everything the leader writes
carries its epoch, and the database's fence row for the role refuses a write from an older epoch
(``services.singleton``). The lease alone is not safety (a paused process can outlive it; Jepsen
on etcd). Redis may lose the counter (it keeps nothing on disk here): ``try_acquire`` takes the
newest epoch the database has seen as a floor, so a restarted Redis never hands out an epoch
that was already used (DESIGN invariant 7).
"""

from __future__ import annotations

import uuid

import redis

from controlplane.live.keys import Keys

_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local epoch = redis.call('INCR', KEYS[2])
  local floor = tonumber(ARGV[3])
  if epoch <= floor then
    epoch = floor + 1
    redis.call('SET', KEYS[2], epoch)
  end
  redis.call('SET', KEYS[1], ARGV[1] .. ':' .. epoch, 'PX', ARGV[2])
  return epoch
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
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def try_acquire(self, *, floor: int = 0) -> int | None:
        """Take the lease if nobody holds it; the new epoch is above ``floor`` (the database's)."""
        epoch = int(
            self._acquire(
                keys=[self.keys.leader(self.role), self.keys.leader_epoch(self.role)],
                args=[self.instance, self.lease_ms, floor],
            )
        )
        self.epoch = epoch or None
        return self.epoch

    def renew(self) -> bool:
        ok = bool(self._renew(keys=[self.keys.leader(self.role)], args=[self.instance, self.lease_ms]))
        if not ok:
            self.epoch = None
        return ok

    def release(self) -> None:
        self._release(keys=[self.keys.leader(self.role)], args=[self.instance])
        self.epoch = None
