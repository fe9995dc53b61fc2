"""One active scheduler: the Redis lease and its fencing epoch, against a real Redis."""

from __future__ import annotations

import time

import redis
from testenv import REDIS_URL

from controlplane.bus import Keys
from controlplane.leader import LeaderLease


def test_one_leader_and_increasing_epochs(redis_prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    keys = Keys(redis_prefix)
    a = LeaderLease(client, keys, lease_s=0.3, instance="a")
    b = LeaderLease(client, keys, lease_s=0.3, instance="b")
    first = a.try_acquire()
    assert first is not None
    assert b.try_acquire() is None  # a standby waits
    assert a.renew() and not b.renew()
    # a stops renewing (paused, partitioned): its lease expires and b takes over with a newer epoch.
    time.sleep(0.4)
    second = b.try_acquire()
    assert second is not None and second > first
    assert not a.renew() and a.epoch is None  # the old leader learns it lost
    b.release()
    third = a.try_acquire()
    assert third is not None and third > second
    client.close()
