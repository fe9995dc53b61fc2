"""One active scheduler: the Redis lease and its fencing epoch, against a real Redis."""

from __future__ import annotations

import time

import redis
from testenv import REDIS_URL

from controlplane.live.keys import Keys
from controlplane.live.lease import LeaderLease
from controlplane.runtime import Runtime


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


def test_database_fence_refuses_an_older_leaders_commit(runtime: Runtime) -> None:
    import pytest
    from factories import make_site, make_tenant, register_node

    from controlplane.domain.epoch import PlacementEpoch
    from controlplane.services.scheduler.run import run_pass
    from controlplane.services.singleton import FencedOut

    make_site(runtime)
    register_node(runtime, 1)
    acme = make_tenant(runtime, "acme")
    from controlplane.domain.enums import NvlinkPolicy, PriorityClass
    from controlplane.domain.specs import WorkloadSpec
    from controlplane.services.workloads import submit

    def submit_one() -> None:
        spec = WorkloadSpec(
            gpu_count=1,
            gpu_model="NVIDIA GB300",
            nvlink=NvlinkPolicy.NONE,
            priority=PriorityClass.ON_DEMAND,
            command=("true",),
        )
        with runtime.uow() as s:
            submit.submit(s, tenant_id=acme.tenant_id, spec=spec, idempotency_key=None, default_max_duration_s=60)

    submit_one()
    assert run_pass(runtime, PlacementEpoch.of(7, 1)).placed == 1  # leader 7 commits
    submit_one()
    with pytest.raises(FencedOut):  # leader 6, paused past its lease, wakes up and tries to commit
        run_pass(runtime, PlacementEpoch.of(6, 99))
    assert run_pass(runtime, PlacementEpoch.of(7, 2)).placed == 1
