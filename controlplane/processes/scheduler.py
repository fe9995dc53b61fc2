"""`switchyard scheduler`: the leader loop around the pure placement core.

Passes run when something may have changed (a submission, a release, a node back: all publish
on the scheduler channel) and at least every ``scheduler_interval_s``. Only the holder of the
Redis lease schedules; a standby replica keeps trying to acquire it.
"""

from __future__ import annotations

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

    def run(self) -> None:
        pubsub = self.runtime.redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self.runtime.keys.scheduler_wake_channel)
        renew_every = self.settings.scheduler_lease_s / 3
        last_renew = 0.0
        passes = 0
        try:
            while not self.stop.is_set():
                try:
                    if self.lease.epoch is None:
                        if singleton.acquire(self.lease, self.runtime.read) is None:
                            self.stop.wait(renew_every)
                            continue
                        log.info("leading the scheduler with fencing epoch %s", self.lease.epoch)
                        passes = 0
                        last_renew = time.monotonic()
                    elif time.monotonic() - last_renew >= renew_every:
                        if not self.lease.renew():
                            log.warning("lost the scheduler lease; standing by")
                            continue
                        last_renew = time.monotonic()
                    assert self.lease.epoch is not None
                    passes += 1
                    result = run_pass(self.runtime, PlacementEpoch.of(self.lease.epoch, passes))
                    if result.placed:
                        log.info("placed %d workloads, %d pending", result.placed, result.still_pending)
                except singleton.FencedOut as exc:
                    log.warning("%s; standing down", exc)
                    self.lease.epoch = None
                except IntegrityError:
                    # The database refused a second live allocation of a GPU: another writer won.
                    log.warning("placement refused by the database (a GPU is already allocated); retrying")
                except OperationalError:
                    log.exception("database unavailable during a scheduling pass; retrying")
                except redis.RedisError:
                    log.exception("Redis unavailable; retrying")
                    self.stop.wait(1)
                    continue
                self._wait_for_wake(pubsub)
        finally:
            pubsub.close()
            if self.lease.epoch is not None:
                try:
                    self.lease.release()
                except redis.RedisError:
                    log.warning("could not release the scheduler lease; it will expire")

    def _wait_for_wake(self, pubsub: redis.client.PubSub) -> None:
        deadline = time.monotonic() + self.settings.scheduler_interval_s
        while not self.stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            message = pubsub.get_message(timeout=min(remaining, 1.0))
            if message is not None:
                # Coalesce a burst of wake-ups into one pass.
                while pubsub.get_message(timeout=0.01) is not None:
                    pass
                return


def main(settings: Settings, stop: threading.Event) -> int:
    runtime = build_runtime(settings)
    try:
        SchedulerLoop(runtime, stop=stop).run()
    finally:
        runtime.close()
    return 0
