"""Live node state in Redis: report dedup by (node, seq), the node lease, the latest GPU sample,
the energy counted from each GPU's cumulative counter, the node's GPUs (a mirror of SQL), and the
fingerprint of the last report folded into SQL (so a report that changes nothing never opens a
database transaction: SQL sees state changes only).

A report goes through one or two Lua scripts, each atomic and each checking everything before
its first write (a Redis script that fails half-way keeps what it wrote):

- ``begin_report``: refuses a duplicate (a seq already seen) or a seq too far ahead, checks
  that no GPU's energy total would leave its bounds, and renews the lease. A report that says
  nothing SQL has not seen (same fingerprint) is recorded there and then: seq, samples, energy.
  Any other report is only *begun*: nothing of it is recorded until SQL has it.
- ``commit_report``, once the SQL fold committed: records the seq, samples and energy, the
  fingerprint, and the node's GPUs as SQL now lists them. A report whose SQL step failed is
  therefore not marked seen, and the agent's retry lands (the fold is idempotent, so a retry
  after this script failed is safe too).

Only GPUs registered to the node are recorded: a sample for any other UUID is dropped (counted
in ``reports:foreign_samples``), so an agent cannot write another node's telemetry or energy,
nor grow Redis with made-up UUIDs. Two API replicas receiving the same retried report cannot
both record it, and a stale report never overwrites a newer sample.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from agents.protocol import MAX_SEQ, SEQ_JUMP_ALLOWANCE, SEQ_JUMP_PER_S, GpuTelemetry
from controlplane.live.keys import Keys

# A GPU's energy total stays exact as a double in these scripts: 2**53 mJ is 285 years of a
# 1 kW GPU, so only a counter that lies reaches it.
MAX_ENERGY_TOTAL_MJ = 2**53 - 1
# Member of every node's GPU set, so a node whose SQL lists no GPU still has one; no UUID is empty.
_SENTINEL = ""

# KEYS (both scripts): seq key, gpus hash, leases zset, energy hash, report hash, GPU uuid set.
# ARGV 1-9 (both): seq, lease expiry, node id, ttl_ms, now (control plane clock), fingerprint
# or "", MAX_SEQ, MAX_ENERGY_TOTAL_MJ, then one script's own argument; then its own tail.
# Energy: the counter is cumulative since driver load, so the total grows by each positive
# delta; a counter that went backwards was reset (driver reload, GPU reset) and restarted at 0,
# so its whole new value is new energy. A report's seq is checked first, so a retried or
# replayed report never adds its delta twice.
_COMMON = """
local seq = tonumber(ARGV[1])

local function last_seq()
  local last = tonumber(redis.call('GET', KEYS[1]) or '-1') or -1
  if last > tonumber(ARGV[7]) then
    last = -1  -- written past today's bound by older code (which let one report wedge a node): forgotten
  end
  return last
end

-- The samples of this node's GPUs, each with its energy delta; nil and the UUID when a total
-- would pass its bound (refused, or with clamp that GPU's delta is left out).
local function plan(first, clamp)
  local writes, dropped = {}, 0
  local max_total = tonumber(ARGV[8])
  for i = first, #ARGV, 3 do
    local uuid = ARGV[i]
    if redis.call('SISMEMBER', KEYS[6], uuid) == 1 then
      local delta, reset = nil, false
      if ARGV[i + 2] ~= '' then
        local counter = tonumber(ARGV[i + 2])
        local prev = redis.call('HGET', KEYS[4], uuid .. ':last')
        if prev then
          delta = counter - tonumber(prev)
          if delta < 0 then
            delta, reset = counter, true
          end
          local total = tonumber(redis.call('HGET', KEYS[4], uuid .. ':total') or '0')
          if total + delta > max_total then
            if not clamp then
              return nil, uuid
            end
            delta = nil
          end
        end
      end
      writes[#writes + 1] = {uuid, ARGV[i + 1], ARGV[i + 2], delta, reset}
    else
      dropped = dropped + 1
    end
  end
  return writes, dropped
end

local function record(writes, dropped)
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('HSET', KEYS[4], 'reports:last_at', ARGV[5])
  redis.call('HINCRBY', KEYS[4], 'reports:accepted', 1)
  if dropped > 0 then
    redis.call('HINCRBY', KEYS[4], 'reports:foreign_samples', dropped)
  end
  for _, w in ipairs(writes) do
    redis.call('HSET', KEYS[2], w[1], w[2])
    if w[3] ~= '' then
      if w[4] then
        if w[5] then
          redis.call('HINCRBY', KEYS[4], w[1] .. ':resets', 1)
        end
        redis.call('HINCRBY', KEYS[4], w[1] .. ':total', string.format('%.0f', w[4]))
      end
      redis.call('HSET', KEYS[4], w[1] .. ':last', w[3])
    end
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  redis.call('PEXPIRE', KEYS[6], ARGV[4])
end
"""

# ARGV 9: the seq jump allowed now (SEQ_JUMP_ALLOWANCE + SEQ_JUMP_PER_S x seconds since the
# node's last report, in ARGV 10); then triples (uuid, sample json, energy mJ or "").
_BEGIN = (
    _COMMON
    + """
local last = last_seq()
if seq <= last then
  redis.call('HINCRBY', KEYS[4], 'reports:duplicate', 1)  -- and no lease: a node whose every report is old is not heard
  return {'duplicate', redis.call('HGET', KEYS[5], 'generation') or ''}
end
if last >= 0 then
  local last_at = tonumber(redis.call('HGET', KEYS[4], 'reports:last_at') or '')
  if last_at then
    local elapsed = math.max(0, tonumber(ARGV[5]) - last_at)
    if seq - last > tonumber(ARGV[9]) + tonumber(ARGV[10]) * elapsed then
      return {'too_far', string.format('%.0f', last)}
    end
  end
end
local writes, dropped = plan(11, false)
if not writes then
  return {'energy', dropped}
end
local stored = redis.call('HMGET', KEYS[5], 'fingerprint', 'generation')
if ARGV[6] == '' or stored[1] ~= ARGV[6] or not stored[2] or redis.call('EXISTS', KEYS[6]) == 0 then
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
  return {'fold'}
end
record(writes, dropped)
return {'recorded', stored[2], dropped}
"""
)

# ARGV 9: the node's generation after the fold; 10: how many GPU UUIDs follow (the node's GPUs
# in SQL, the sentinel first); then triples (uuid, sample json, energy mJ or "").
_COMMIT = (
    _COMMON
    + """
local n = tonumber(ARGV[10])
if seq <= last_seq() then
  -- A newer report (or this one, through another replica) was recorded first: its samples,
  -- counters and GPU set stand.
  if redis.call('EXISTS', KEYS[6]) == 0 then
    redis.call('SADD', KEYS[6], unpack(ARGV, 11, 10 + n))
    redis.call('PEXPIRE', KEYS[6], ARGV[4])
  end
  return {'stale', 0}
end
redis.call('DEL', KEYS[6])
redis.call('SADD', KEYS[6], unpack(ARGV, 11, 10 + n))
-- Whatever the hashes hold of GPUs that are not the node's (written before these checks) goes.
for _, field in ipairs(redis.call('HKEYS', KEYS[4])) do
  local uuid = string.match(field, '^(.*):[^:]*$')
  if uuid and uuid ~= 'reports' and redis.call('SISMEMBER', KEYS[6], uuid) == 0 then
    redis.call('HDEL', KEYS[4], field)
  end
end
for _, uuid in ipairs(redis.call('HKEYS', KEYS[2])) do
  if redis.call('SISMEMBER', KEYS[6], uuid) == 0 then
    redis.call('HDEL', KEYS[2], uuid)
  end
end
local writes, dropped = plan(11 + n, true)
record(writes, dropped)
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[5], 'fingerprint', ARGV[6])
  local current = tonumber(redis.call('HGET', KEYS[5], 'generation') or '0')
  if tonumber(ARGV[9]) > current then
    redis.call('HSET', KEYS[5], 'generation', ARGV[9])
  end
  redis.call('EXPIRE', KEYS[5], 300)  -- a bound on how long a wrong fingerprint could ever stick
end
return {'recorded', dropped}
"""
)


class Begun(StrEnum):
    DUPLICATE = "duplicate"  # the seq was already seen: nothing recorded, not even the lease
    TOO_FAR = "too_far"  # the seq jumps further ahead than allowed: nothing recorded
    ENERGY = "energy"  # a GPU's energy total would leave its bounds: nothing recorded
    FOLD = "fold"  # the lease is renewed; the rest waits for SQL (``commit_report``)
    RECORDED = "recorded"  # nothing for SQL: seq, samples and energy are recorded


@dataclass(frozen=True)
class BeginResult:
    outcome: Begun
    generation: int | None = None  # the node's generation, when Redis knows it
    dropped: int = 0  # samples of GPUs that are not the node's, left out
    detail: str = ""  # the node's last seq (TOO_FAR), the GPU whose total is out of bounds (ENERGY)


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
        self._begin = client.register_script(_BEGIN)
        self._commit = client.register_script(_COMMIT)

    def _keys(self, node_id: str) -> list[str]:
        return [
            self.keys.node_seq(node_id),
            self.keys.node_gpus(node_id),
            self.keys.leases,
            self.keys.node_energy(node_id),
            self.keys.node_report(node_id),
            self.keys.node_gpu_uuids(node_id),
        ]

    @staticmethod
    def _head(
        *, seq: int, node_id: str, now: float, lease_ttl_s: float, fingerprint: str | None, own: Any
    ) -> list[Any]:
        ttl_ms = int(max(lease_ttl_s * 20, 60) * 1000)
        return [
            seq,
            now + lease_ttl_s,
            node_id,
            ttl_ms,
            repr(now),
            fingerprint or "",
            MAX_SEQ,
            MAX_ENERGY_TOTAL_MJ,
            own,
        ]

    @staticmethod
    def _samples(gpus: list[GpuTelemetry], *, now: float, sent_at: float) -> list[Any]:
        args: list[Any] = []
        for gpu in gpus:
            sample = gpu.model_dump(exclude_none=True)
            sample["at"] = sent_at  # when the agent sampled it: a replayed spool keeps its own times
            sample["received_at"] = now
            energy = "" if gpu.energy_mj is None else str(gpu.energy_mj)
            args += [gpu.uuid, json.dumps(sample, separators=(",", ":")), energy]
        return args

    def begin_report(
        self,
        *,
        node_id: str,
        seq: int,
        gpus: list[GpuTelemetry],
        fingerprint: str | None,
        now: float,
        lease_ttl_s: float,
        sent_at: float,
    ) -> BeginResult:
        """One round trip: refuse, record (nothing for SQL), or renew the lease and wait for SQL."""
        args = self._head(
            seq=seq, node_id=node_id, now=now, lease_ttl_s=lease_ttl_s, fingerprint=fingerprint, own=SEQ_JUMP_ALLOWANCE
        )
        args += [SEQ_JUMP_PER_S, *self._samples(gpus, now=now, sent_at=sent_at)]
        answer = self._begin(keys=self._keys(node_id), args=args)
        outcome = Begun(str(answer[0]))
        if outcome is Begun.DUPLICATE:
            return BeginResult(outcome, generation=int(answer[1]) if answer[1] not in ("", None) else None)
        if outcome is Begun.RECORDED:
            return BeginResult(outcome, generation=int(answer[1]), dropped=int(answer[2]))
        if outcome in (Begun.TOO_FAR, Begun.ENERGY):
            return BeginResult(outcome, detail=str(answer[1]))
        return BeginResult(outcome)

    def commit_report(
        self,
        *,
        node_id: str,
        seq: int,
        gpus: list[GpuTelemetry],
        fingerprint: str | None,
        generation: int,
        node_gpus: list[str],
        now: float,
        lease_ttl_s: float,
        sent_at: float,
    ) -> int | None:
        """After the SQL fold: record the report and the node's GPUs (``node_gpus``, as SQL lists
        them). The samples of other GPUs left out, or None if a newer report was recorded first."""
        uuids = [_SENTINEL, *node_gpus]
        args = self._head(
            seq=seq, node_id=node_id, now=now, lease_ttl_s=lease_ttl_s, fingerprint=fingerprint, own=generation
        )
        args += [len(uuids), *uuids, *self._samples(gpus, now=now, sent_at=sent_at)]
        answer = self._commit(keys=self._keys(node_id), args=args)
        return None if answer[0] == "stale" else int(answer[1])

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

    def energy(self, node_ids: list[str]) -> dict[str, dict[str, EnergyCount]]:
        """Energy per node and GPU UUID: a node's counts of its own GPUs only."""
        pipe = self.redis.pipeline(transaction=False)
        for node_id in node_ids:
            pipe.hgetall(self.keys.node_energy(node_id))
        out: dict[str, dict[str, EnergyCount]] = {}
        for node_id, found in zip(node_ids, pipe.execute(), strict=True):
            raw = {str(k): str(v) for k, v in found.items() if not str(k).startswith("reports:")}
            out[node_id] = {
                uuid: EnergyCount(
                    total_mj=int(raw.get(f"{uuid}:total", 0)),
                    last_counter_mj=int(raw.get(f"{uuid}:last", 0)),
                    resets=int(raw.get(f"{uuid}:resets", 0)),
                )
                for uuid in {k.rsplit(":", 1)[0] for k in raw}
            }
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

    def gpu_samples(self, node_ids: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
        """Latest sample per node and GPU UUID (absent fields are simply missing)."""
        pipe = self.redis.pipeline(transaction=False)
        for node_id in node_ids:
            pipe.hgetall(self.keys.node_gpus(node_id))
        return {
            node_id: {uuid: json.loads(blob) for uuid, blob in raw.items()}
            for node_id, raw in zip(node_ids, pipe.execute(), strict=True)
        }
