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

    def __bool__(self) -> bool:
        return bool(self.nodes) or self.scheduler


class Bus:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys

    def publish(self, wakeups: Wakeups) -> None:
        if not wakeups:
            return
        pipe = self.redis.pipeline(transaction=False)
        for node_id in sorted(wakeups.nodes):
            pipe.publish(self.keys.node_wake_channel, node_id)
        if wakeups.scheduler:
            pipe.publish(self.keys.scheduler_wake_channel, "1")
        pipe.execute()


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)
