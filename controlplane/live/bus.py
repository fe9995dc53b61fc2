"""Wake-ups: who must hear about a unit of work once it commits, and the publish that tells them.

Heartbeats and telemetry live in Redis, never in SQL rows; SQL sees state changes only.

A publish runs after the commit, so Redis failing then must not turn a committed request into an
error: the wake-ups it could not send are kept (merged, so they stay bounded by the number of
nodes) and sent again, by the next publish or by a retry thread, until Redis takes them. None is
needed for correctness, only for speed: the scheduler also runs on an interval, a long poll
re-reads the generation from SQL when it times out, and a report's answer carries it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

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

    def merge(self, other: Wakeups) -> None:
        """Add ``other``'s wake-ups to these (a generation keeps the larger of the two)."""
        self.nodes |= other.nodes
        self.scheduler = self.scheduler or other.scheduler
        for node_id, generation in other.generations.items():
            self.generations[node_id] = max(generation, self.generations.get(node_id, 0))
        self.invalidate |= other.invalidate


log = logging.getLogger(__name__)


# Commits can publish out of order: keep the larger generation.
MAX_GENERATION_SCRIPT = """
local current = tonumber(redis.call('HGET', KEYS[1], 'generation') or '0')
if tonumber(ARGV[1]) > current then
  redis.call('HSET', KEYS[1], 'generation', ARGV[1])
end
return 1
"""


class Bus:
    def __init__(self, client: redis.Redis, keys: Keys, *, retry_s: float = 1.0) -> None:
        self.redis = client
        self.keys = keys
        self.retry_s = retry_s
        self._lock = threading.Lock()
        self._unsent = Wakeups()  # guarded by _lock
        self._retrier: threading.Thread | None = None  # guarded by _lock
        self._closed = threading.Event()
        self._failing = False  # guarded by _lock: logged once per outage, not per publish

    @property
    def unsent(self) -> bool:
        """Some wake-ups are waiting for Redis to come back."""
        with self._lock:
            return bool(self._unsent)

    def publish(self, wakeups: Wakeups) -> bool:
        """Send ``wakeups`` (and any still unsent); never raises for Redis. False: kept for a retry."""
        with self._lock:
            batch, self._unsent = self._unsent, Wakeups()
        batch.merge(wakeups)
        if not batch:
            return True
        try:
            self._send(batch)
        except redis.RedisError as exc:
            self._keep(batch, exc)
            return False
        self._sent()
        return True

    def close(self) -> None:
        self._closed.set()

    def _keep(self, batch: Wakeups, exc: redis.RedisError) -> None:
        with self._lock:
            first, self._failing = not self._failing, True
            self._unsent.merge(batch)
            if self._retrier is None and not self._closed.is_set():
                self._retrier = threading.Thread(target=self._retry, name="wakeup-retry", daemon=True)
                self._retrier.start()
        if first:
            log.warning("wake-ups not sent (Redis: %s); retrying every %.1f s", exc, self.retry_s)

    def _retry(self) -> None:
        while not self._closed.wait(self.retry_s):
            with self._lock:
                batch, self._unsent = self._unsent, Wakeups()
                if not batch:
                    self._retrier = None
                    return
            try:
                self._send(batch)
            except redis.RedisError:
                with self._lock:
                    batch.merge(self._unsent)
                    self._unsent = batch
                continue
            self._sent()

    def _sent(self) -> None:
        with self._lock:
            recovered = self._failing and not self._unsent
            if recovered:
                self._failing = False
        if recovered:
            log.info("sent the wake-ups held while Redis was unreachable")

    def _send(self, wakeups: Wakeups) -> None:
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
    """A client that fails fast when Redis is away (two quick reconnects cover a dropped
    connection; then the caller answers 503 or retries later) instead of holding a request for
    redis-py's default backoff, and never waits forever on a Redis that stopped answering."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        health_check_interval=30,
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 2),
    )
