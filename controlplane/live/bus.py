"""Wake-ups: who must hear about a unit of work once it commits, and the publish that tells them.

Heartbeats and telemetry live in Redis, never in SQL rows; SQL sees state changes only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis

from controlplane.live.keys import Keys


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
