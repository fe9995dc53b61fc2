"""Leader election for the scheduler: a Redis lease plus a fencing epoch.

Acquiring the lease increments a global epoch (the fencing token). Every allocation records the
epoch of the scheduler that made it, and agents refuse a new assignment older than the newest
epoch they have seen. The lease alone is not safety (a paused process can outlive it; Jepsen on
etcd): the database's unique index on live allocations is the last line.
"""

from __future__ import annotations

import uuid

import redis

from controlplane.bus import Keys

_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local epoch = redis.call('INCR', KEYS[2])
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


class LeaderLease:
    def __init__(self, client: redis.Redis, keys: Keys, *, lease_s: float, instance: str | None = None) -> None:
        self.redis = client
        self.keys = keys
        self.lease_ms = int(lease_s * 1000)
        self.instance = instance or uuid.uuid4().hex
        self.epoch: int | None = None
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def try_acquire(self) -> int | None:
        epoch = int(
            self._acquire(
                keys=[self.keys.scheduler_leader, self.keys.scheduler_epoch],
                args=[self.instance, self.lease_ms],
            )
        )
        self.epoch = epoch or None
        return self.epoch

    def renew(self) -> bool:
        ok = bool(self._renew(keys=[self.keys.scheduler_leader], args=[self.instance, self.lease_ms]))
        if not ok:
            self.epoch = None
        return ok

    def release(self) -> None:
        self._release(keys=[self.keys.scheduler_leader], args=[self.instance])
        self.epoch = None
