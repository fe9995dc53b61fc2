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
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError

from controlplane.config import Settings
from controlplane.live.lease import LeaderLease
from controlplane.runtime import Runtime, build_runtime
from controlplane.scheduling.core import schedule
from controlplane.scheduling.snapshot import Placement, Preempt
from controlplane.services import placement
from controlplane.services import snapshot as snapshots
from controlplane.store.models import Site

log = logging.getLogger("switchyard.scheduler")


def placement_epoch(leader_epoch: int, pass_number: int) -> int:
    """The epoch stamped on a pass's allocations: the leader's fencing epoch in the high bits (so a
    newer leader always outranks an older one), the pass number in the low 32 (so two placements
    of one workload, e.g. before and after a requeue, never share an epoch)."""
    return (leader_epoch << 32) | (pass_number & 0xFFFFFFFF)


def run_pass(runtime: Runtime, epoch: int) -> placement.CommitResult:
    """One pass: each site in turn gets the workloads still pending, under its own power cap."""
    placed = preempted = 0
    pending = 0
    with runtime.uow() as session:
        queue = snapshots.pending_queue(session)
        sites: list[Site | None] = list(session.scalars(select(Site).order_by(Site.name)).all()) or [None]
        if not queue and sites == [None]:
            return placement.CommitResult(placed=0, still_pending=0)
        for site in sites:
            # Even with nothing pending, each site's pass gives freed power back to mining.
            snapshot = snapshots.build_snapshot(session, site=site, spot_grace_s=runtime.settings.spot_grace_s)
            decisions = schedule(snapshot, queue)
            result = placement.commit(session, decisions=decisions, epoch=epoch, site=site, snapshot=snapshot)
            placed += result.placed
            preempted += result.preempted
            done = {d.workload_id for d in decisions if isinstance(d, Placement)}
            waiting = {d.for_workload_id for d in decisions if isinstance(d, Preempt)}
            queue = [r for r in queue if r.workload_id not in done and r.workload_id not in waiting]
            pending = len(queue)
    return placement.CommitResult(placed=placed, still_pending=pending, preempted=preempted)


class SchedulerLoop:
    def __init__(self, runtime: Runtime, *, stop: threading.Event | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.stop = stop or threading.Event()
        self.lease = LeaderLease(runtime.redis, runtime.keys, lease_s=self.settings.scheduler_lease_s)

    def run(self) -> None:
        pubsub = self.runtime.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        pubsub.subscribe(self.runtime.keys.scheduler_wake_channel)
        renew_every = self.settings.scheduler_lease_s / 3
        last_renew = 0.0
        passes = 0
        try:
            while not self.stop.is_set():
                try:
                    if self.lease.epoch is None:
                        if self.lease.try_acquire() is None:
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
                    result = run_pass(self.runtime, placement_epoch(self.lease.epoch, passes))
                    if result.placed:
                        log.info("placed %d workloads, %d pending", result.placed, result.still_pending)
                except placement.FencedOut as exc:
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
