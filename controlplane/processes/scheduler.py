"""`switchyard scheduler`: the leader loop around the pure placement core.

Passes run when something may have changed (a submission, a release, a node back: all publish
on the scheduler channel) and at least every ``scheduler_interval_s``. Only the holder of the
Redis lease schedules; a standby replica keeps trying to acquire it.

Redis going away stops nothing: the loop keeps running passes on its interval while its lease
can still be valid (every commit is fenced in the database, so this is safe even if another
instance has taken over), waits for wake-ups again once Redis is back, and re-acquires (with a
new epoch from the database's fence) as soon as it finds its lease gone.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import redis
from sqlalchemy.exc import IntegrityError, OperationalError

from controlplane.config import Settings
from controlplane.domain.epoch import PlacementEpoch
from controlplane.live.lease import SCHEDULER, LeaderLease
from controlplane.runtime import Runtime, build_runtime
from controlplane.services import singleton
from controlplane.services.scheduler.run import run_pass

log = logging.getLogger("switchyard.scheduler")


class SchedulerLoop:
    def __init__(self, runtime: Runtime, *, stop: threading.Event | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.stop = stop or threading.Event()
        self.lease = LeaderLease(runtime.redis, runtime.keys, lease_s=self.settings.scheduler_lease_s, role=SCHEDULER)
        self.renew_every = self.settings.scheduler_lease_s / 3
        self._renewed_at = 0.0  # monotonic time a renewal (or the acquisition) was sent
        self._passes = 0
        self._pubsub: redis.client.PubSub | None = None
        self._pubsub_lost = False  # wake-ups may have been missed since
        self._redis_down_since: float | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    if not self._lead():
                        self.stop.wait(self.renew_every)
                        continue
                    assert self.lease.epoch is not None
                    self._passes += 1
                    result = run_pass(self.runtime, PlacementEpoch.of(self.lease.epoch, self._passes))
                    if result.placed:
                        log.info("placed %d workloads, %d pending", result.placed, result.still_pending)
                except singleton.FencedOut as exc:
                    log.warning("%s; standing down", exc)
                    self._give_up_lease()
                    continue
                except IntegrityError:
                    # The database refused a second live allocation of a GPU: another writer won.
                    log.warning("placement refused by the database (a GPU is already allocated); retrying")
                except OperationalError:
                    log.exception("database unavailable during a scheduling pass; retrying")
                except redis.RedisError as exc:
                    self._redis_failed(exc)
                    self.stop.wait(1)
                    continue
                self._wait_for_wake()
        finally:
            self._close_pubsub()
            if self.lease.epoch is not None:
                try:
                    self.lease.release()
                except redis.RedisError:
                    log.warning("could not release the scheduler lease; it will expire")

    def _lead(self) -> bool:
        """Renew the lease when due, or acquire it; True while this instance may run passes.
        A lease found lost (expired, or Redis lost its keys) is acquired again at once."""
        if self.lease.epoch is not None and self._renew_when_due():
            return True
        sent = time.monotonic()
        epoch = singleton.acquire(self.lease, self.runtime.uow)
        self._redis_ok()
        if epoch is None:
            return False
        log.info("leading the scheduler with fencing epoch %s", epoch)
        self._passes, self._renewed_at = 0, sent
        return True

    def _renew_when_due(self) -> bool:
        """True while the lease holds; False once it is lost (``lease.epoch`` is then None)."""
        if time.monotonic() - self._renewed_at < self.renew_every:
            return True
        sent = time.monotonic()
        try:
            renewed = self.lease.renew()
        except redis.RedisError as exc:
            self._redis_failed(exc)
            if time.monotonic() - self._renewed_at < self.settings.scheduler_lease_s:
                return True  # nobody can take a lease while Redis is away, and the fence guards commits
            log.warning("the scheduler lease has expired while Redis was unreachable; standing by")
            self.lease.epoch = None
            return False
        self._redis_ok()
        if not renewed:
            log.warning("lost the scheduler lease; acquiring it again")
            return False
        self._renewed_at = sent
        return True

    def _give_up_lease(self) -> None:
        """Fenced out: a newer leader exists. Drop our lease at once if Redis still holds it, so
        the next acquisition does not wait for it to expire."""
        try:
            self.lease.release()
        except redis.RedisError as exc:
            self.lease.epoch = None
            self._redis_failed(exc)

    def _wait_for_wake(self) -> None:
        """Until a wake-up or ``scheduler_interval_s``; without Redis, just the interval."""
        deadline = time.monotonic() + self.settings.scheduler_interval_s
        try:
            if self._pubsub is None:
                self._pubsub = self.runtime.redis.pubsub(ignore_subscribe_messages=True)
                self._pubsub.subscribe(self.runtime.keys.scheduler_wake_channel)
                self._redis_ok()
                if self._pubsub_lost:
                    self._pubsub_lost = False
                    return  # wake-ups sent while we were not listening are lost: run a pass now
            while not self.stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                message = self._pubsub.get_message(timeout=min(remaining, 1.0))
                if message is not None:
                    # Coalesce a burst of wake-ups into one pass.
                    while self._pubsub.get_message(timeout=0.01) is not None:
                        pass
                    return
        except redis.RedisError as exc:
            self._redis_failed(exc)
            self._close_pubsub()
            self._pubsub_lost = True
            self.stop.wait(max(0.0, deadline - time.monotonic()))

    def _close_pubsub(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(redis.RedisError):
                self._pubsub.close()
            self._pubsub = None

    def _redis_failed(self, exc: redis.RedisError) -> None:
        if self._redis_down_since is None:
            self._redis_down_since = time.monotonic()
            log.warning("Redis unavailable (%s); scheduling on the interval and retrying", exc)

    def _redis_ok(self) -> None:
        if self._redis_down_since is not None:
            log.info("Redis is back after %.1f s", time.monotonic() - self._redis_down_since)
            self._redis_down_since = None


def main(settings: Settings, stop: threading.Event) -> int:
    runtime = build_runtime(settings)
    try:
        SchedulerLoop(runtime, stop=stop).run()
    finally:
        runtime.close()
    return 0
