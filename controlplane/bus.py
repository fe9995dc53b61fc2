"""Redis: key names, the wake-up channels, and the live-state scripts.

Heartbeats and telemetry live here, never in SQL rows; SQL sees state changes only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis


@dataclass(frozen=True)
class Keys:
    prefix: str

    def node_seq(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}:seq"

    def node_gpus(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}:gpus"

    def node_energy(self, node_id: str) -> str:
        """Hash: per GPU, the last energy counter seen and the energy accumulated from it; and the
        node's counts of accepted and duplicate reports."""
        return f"{self.prefix}:node:{node_id}:energy"

    def node_report(self, node_id: str) -> str:
        """Hash: the fingerprint of the last report folded into SQL, and the node's generation."""
        return f"{self.prefix}:node:{node_id}:report"

    @property
    def leases(self) -> str:
        """Sorted set: node id -> lease expiry (unix s). One ZRANGEBYSCORE finds every expired lease."""
        return f"{self.prefix}:leases"

    @property
    def node_wake_channel(self) -> str:
        return f"{self.prefix}:wake:nodes"

    @property
    def scheduler_wake_channel(self) -> str:
        return f"{self.prefix}:wake:scheduler"

    @property
    def scheduler_leader(self) -> str:
        return f"{self.prefix}:scheduler:leader"

    @property
    def scheduler_epoch(self) -> str:
        return f"{self.prefix}:scheduler:epoch"


@dataclass
class Wakeups:
    """Who must hear about a unit of work once it commits (never before: they would read old rows)."""

    nodes: set[str] = field(default_factory=set)
    scheduler: bool = False
    # New desired-state generations, mirrored to Redis so unchanged reports skip SQL.
    generations: dict[str, int] = field(default_factory=dict)
    # Nodes whose next report must go to SQL (their SQL state changed behind the agent's back).
    invalidate: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.nodes or self.scheduler or self.generations or self.invalidate)


# Commits can publish out of order: keep the larger generation.
MAX_GENERATION_SCRIPT = """
local current = tonumber(redis.call('HGET', KEYS[1], 'generation') or '0')
if tonumber(ARGV[1]) > current then
  redis.call('HSET', KEYS[1], 'generation', ARGV[1])
end
return 1
"""


class Bus:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    def publish(self, wakeups: Wakeups) -> None:
        if not wakeups:
            return
        pipe = self.redis.pipeline(transaction=False)
        for node_id, generation in wakeups.generations.items():
            pipe.eval(MAX_GENERATION_SCRIPT, 1, self.keys.node_report(node_id), generation)
        for node_id in wakeups.invalidate:
            pipe.delete(self.keys.node_report(node_id))
        for node_id in sorted(wakeups.nodes):
            pipe.publish(self.keys.node_wake_channel, node_id)
        if wakeups.scheduler:
            pipe.publish(self.keys.scheduler_wake_channel, "1")
        pipe.execute()


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)
