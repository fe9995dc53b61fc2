"""Live node state in Redis: report dedup by (node, seq), the node lease, the latest GPU sample,
and the fingerprint of the last report folded into SQL (so a report that changes nothing never
opens a database transaction: SQL sees state changes only).

One Lua script does all three atomically, so two API replicas receiving the same retried
report cannot both accept it, and a stale report never overwrites a newer sample.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import redis

from agents.protocol import GpuTelemetry
from controlplane.live.bus import MAX_GENERATION_SCRIPT
from controlplane.live.keys import Keys

# KEYS: seq key, gpus hash, leases zset, energy hash.
# ARGV: seq, lease expiry, node id, ttl_ms, then triples (uuid, sample json, energy mJ or "").
# Energy: the counter is cumulative since driver load, so the total grows by each positive
# delta; a counter that went backwards was reset (driver reload, GPU reset) and restarted at 0,
# so its whole new value is new energy. A report's seq is checked first, so a retried or
# replayed report never adds its delta twice.
_RECORD = """
local last = tonumber(redis.call('GET', KEYS[1]) or '-1')
local seq = tonumber(ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
if seq <= last then
  redis.call('HINCRBY', KEYS[4], 'reports:duplicate', 1)
  return 0
end
redis.call('HINCRBY', KEYS[4], 'reports:accepted', 1)
redis.call('SET', KEYS[1], ARGV[1])
for i = 5, #ARGV, 3 do
  local uuid = ARGV[i]
  redis.call('HSET', KEYS[2], uuid, ARGV[i + 1])
  if ARGV[i + 2] ~= '' then
    local now = tonumber(ARGV[i + 2])
    local prev = redis.call('HGET', KEYS[4], uuid .. ':last')
    if prev then
      local delta = now - tonumber(prev)
      if delta < 0 then
        delta = now
        redis.call('HINCRBY', KEYS[4], uuid .. ':resets', 1)
      end
      redis.call('HINCRBY', KEYS[4], uuid .. ':total', delta)
    end
    redis.call('HSET', KEYS[4], uuid .. ':last', ARGV[i + 2])
  end
end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"""


@dataclass(frozen=True)
class EnergyCount:
    """Energy a GPU used since the control plane first heard of it, from its cumulative counter."""

    total_mj: int
    last_counter_mj: int
    resets: int


log = logging.getLogger(__name__)


class LiveState:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._record = client.register_script(_RECORD)

    def record_report(
        self,
        *,
        node_id: str,
        seq: int,
        gpus: list[GpuTelemetry],
        now: float,
        lease_ttl_s: float,
        sent_at: float | None = None,
    ) -> bool:
        """Renew the lease; store the sample unless this seq was already seen. True if fresh."""
        sent_at = now if sent_at is None else sent_at
        args: list[Any] = [seq, now + lease_ttl_s, node_id, int(max(lease_ttl_s * 20, 60) * 1000)]
        for gpu in gpus:
            sample = gpu.model_dump(exclude_none=True)
            sample["at"] = sent_at  # when the agent sampled it: a replayed spool keeps its own times
            sample["received_at"] = now
            energy = "" if gpu.energy_mj is None else str(gpu.energy_mj)
            args += [gpu.uuid, json.dumps(sample, separators=(",", ":")), energy]
        keys = [
            self.keys.node_seq(node_id),
            self.keys.node_gpus(node_id),
            self.keys.leases,
            self.keys.node_energy(node_id),
        ]
        return bool(self._record(keys=keys, args=args))

    def renew_lease(self, *, node_id: str, now: float, lease_ttl_s: float) -> None:
        self.redis.zadd(self.keys.leases, {node_id: now + lease_ttl_s})

    def start_lease(self, *, node_id: str, now: float, lease_ttl_s: float) -> bool:
        """Start a node's lease after its registration committed: if Redis fails now, the
        registration still stands (its credential was issued) and the first report starts the
        lease instead. False if it could not be written."""
        try:
            self.renew_lease(node_id=node_id, now=now, lease_ttl_s=lease_ttl_s)
        except redis.RedisError as exc:
            log.warning("node %s registered; its lease starts with its first report (Redis: %s)", node_id, exc)
            return False
        return True

    def expired_leases(self, *, now: float) -> list[str]:
        return [str(node_id) for node_id in self.redis.zrangebyscore(self.keys.leases, "-inf", now)]

    def forget_node(self, node_id: str) -> None:
        self.redis.zrem(self.keys.leases, node_id)

    def energy(self, node_ids: list[str]) -> dict[str, EnergyCount]:
        """Energy per GPU UUID for the given nodes."""
        pipe = self.redis.pipeline(transaction=False)
        for node_id in node_ids:
            pipe.hgetall(self.keys.node_energy(node_id))
        out: dict[str, EnergyCount] = {}
        for found in pipe.execute():
            raw = {str(k): str(v) for k, v in found.items() if not str(k).startswith("reports:")}
            for uuid in {k.rsplit(":", 1)[0] for k in raw}:
                out[uuid] = EnergyCount(
                    total_mj=int(raw.get(f"{uuid}:total", 0)),
                    last_counter_mj=int(raw.get(f"{uuid}:last", 0)),
                    resets=int(raw.get(f"{uuid}:resets", 0)),
                )
        return out

    def report_counts(self, node_id: str) -> tuple[int, int, int | None]:
        """Reports accepted and refused as duplicates (retries, replays), and the last seq."""
        return self.node_liveness([node_id], now=0.0)[node_id][1]

    def node_liveness(self, node_ids: list[str], *, now: float) -> dict[str, tuple[bool, tuple[int, int, int | None]]]:
        """Lease alive and report counts for many nodes in one round trip (the operator views)."""
        pipe = self.redis.pipeline(transaction=False)
        for node_id in node_ids:
            pipe.zscore(self.keys.leases, node_id)
            pipe.hmget(self.keys.node_energy(node_id), ["reports:accepted", "reports:duplicate"])
            pipe.get(self.keys.node_seq(node_id))
        found = pipe.execute()
        out = {}
        for i, node_id in enumerate(node_ids):
            expiry, (accepted, duplicate), seq = found[3 * i : 3 * i + 3]
            alive = expiry is not None and float(expiry) > now
            out[node_id] = (alive, (int(accepted or 0), int(duplicate or 0), None if seq is None else int(seq)))
        return out

    def unchanged_report(self, node_id: str, fingerprint: str) -> int | None:
        """The node's generation if this report says nothing SQL has not already seen, else None."""
        stored = self.redis.hmget(self.keys.node_report(node_id), ["fingerprint", "generation"])
        if stored[0] != fingerprint or stored[1] is None:
            return None
        return int(stored[1])

    def remember_report(self, node_id: str, fingerprint: str, generation: int) -> None:
        key = self.keys.node_report(node_id)
        pipe = self.redis.pipeline()
        pipe.hset(key, mapping={"fingerprint": fingerprint})
        pipe.eval(MAX_GENERATION_SCRIPT, 1, key, generation)
        pipe.expire(key, 300)  # a bound on how long a wrong fingerprint could ever stick
        pipe.execute()

    def gpu_samples(self, node_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Latest sample per GPU UUID for the given nodes (absent fields are simply missing)."""
        pipe = self.redis.pipeline(transaction=False)
        for node_id in node_ids:
            pipe.hgetall(self.keys.node_gpus(node_id))
        out: dict[str, dict[str, Any]] = {}
        for raw in pipe.execute():
            for uuid, blob in raw.items():
                out[uuid] = json.loads(blob)
        return out
