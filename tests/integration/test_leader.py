"""One active scheduler: the Redis lease and its fencing epoch, against a real Redis."""

from __future__ import annotations

import time

from controlplane.live.lease import SCHEDULER, LeaderLease
from controlplane.runtime import Runtime
from controlplane.services.singleton import acquire, fence_epoch


def test_one_leader_and_increasing_epochs(runtime: Runtime) -> None:
    a = LeaderLease(runtime.redis, runtime.keys, lease_s=0.3, instance="a")
    b = LeaderLease(runtime.redis, runtime.keys, lease_s=0.3, instance="b")
    first = acquire(a, runtime.uow)
    assert first is not None
    assert acquire(b, runtime.uow) is None  # a standby waits
    assert a.renew() and not b.renew()
    # a stops renewing (paused, partitioned): its lease expires and b takes over with a newer epoch.
    time.sleep(0.4)
    second = acquire(b, runtime.uow)
    assert second is not None and second > first
    assert not a.renew() and a.epoch is None  # the old leader learns it lost
    b.release()
    third = acquire(a, runtime.uow)
    assert third is not None and third > second
    assert fence_epoch(runtime.read, SCHEDULER) == third


def _lose_redis(runtime: Runtime) -> None:
    """What a FLUSHALL does to this test's keys (the shared Redis itself is never flushed)."""
    keys = list(runtime.redis.scan_iter(f"{runtime.keys.prefix}:*"))
    if keys:
        runtime.redis.delete(*keys)


def test_epochs_are_never_reused_after_redis_loses_its_keys(runtime: Runtime) -> None:
    """An epoch is claimed in the database when it is handed out, not when it first commits: a
    leader that has not committed yet when Redis loses everything is still never given a twin."""
    a = LeaderLease(runtime.redis, runtime.keys, lease_s=60, instance="a")
    b = LeaderLease(runtime.redis, runtime.keys, lease_s=60, instance="b")
    epochs = [acquire(a, runtime.uow)]
    for _ in range(3):
        _lose_redis(runtime)
        started = time.monotonic()
        epochs.append(acquire(b, runtime.uow))
        assert time.monotonic() - started < 1.0  # at once: no wait for a lease or a missing epoch
        b.epoch = None
    assert None not in epochs and [e or 0 for e in epochs] == sorted({e or 0 for e in epochs}), epochs
    assert epochs[-1] == fence_epoch(runtime.read, SCHEDULER)


def test_a_new_leader_fences_out_the_old_one_before_committing(runtime: Runtime) -> None:
    """After Redis lost the lease, the old leader (still believing it leads) cannot commit once a
    new one has its epoch, even before the new one's first commit."""
    import pytest
    from factories import make_site

    from controlplane.domain.epoch import PlacementEpoch
    from controlplane.services.scheduler.run import run_pass
    from controlplane.services.singleton import FencedOut

    make_site(runtime)
    old = LeaderLease(runtime.redis, runtime.keys, lease_s=60, instance="old")
    new = LeaderLease(runtime.redis, runtime.keys, lease_s=60, instance="new")
    old_epoch = acquire(old, runtime.uow)
    assert old_epoch is not None
    run_pass(runtime, PlacementEpoch.of(old_epoch, 1))
    _lose_redis(runtime)
    new_epoch = acquire(new, runtime.uow)
    assert new_epoch is not None and new_epoch > old_epoch
    with pytest.raises(FencedOut):
        run_pass(runtime, PlacementEpoch.of(old_epoch, 2))
    run_pass(runtime, PlacementEpoch.of(new_epoch, 1))


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


def test_a_rank_refused_for_a_stale_epoch_is_placed_again_not_failed(runtime: Runtime) -> None:
    """An agent refuses a placement older than an epoch it has seen (fencing); the workload is
    the tenant's and did nothing wrong: it goes back to pending and runs under the current leader."""
    from factories import make_site, make_tenant, register_node

    from agents.protocol import PROTOCOL_VERSION, AssignmentPhase, AssignmentStatus, ReportRequest
    from agents.reconcile import plan_reconcile
    from controlplane.domain.enums import NvlinkPolicy, PriorityClass, WorkloadState
    from controlplane.domain.epoch import PlacementEpoch
    from controlplane.domain.specs import WorkloadSpec
    from controlplane.services.agents import desired, reports
    from controlplane.services.scheduler.run import run_pass
    from controlplane.services.workloads import submit
    from controlplane.store.models import Workload

    make_site(runtime)
    node = register_node(runtime, 1)
    gpus = {g.uuid for g in node.inventory.gpus}
    acme = make_tenant(runtime, "acme")
    spec = WorkloadSpec(
        gpu_count=1,
        gpu_model="NVIDIA GB300",
        nvlink=NvlinkPolicy.NONE,
        priority=PriorityClass.ON_DEMAND,
        command=("true",),
    )
    with runtime.uow() as s:
        wl_id = submit.submit(
            s, tenant_id=acme.tenant_id, spec=spec, idempotency_key=None, default_max_duration_s=60
        ).workload.id
    assert run_pass(runtime, PlacementEpoch.of(3, 1)).placed == 1
    seen = PlacementEpoch.of(4, 7).value  # the agent has seen a newer leader's placements

    def agent_plans(known: list[AssignmentStatus]) -> tuple[list[str], list[AssignmentStatus]]:
        with runtime.read() as s:
            state = desired.desired_state(s, node_id=node.node_id)
        plan = plan_reconcile(state.assignments, known, max_epoch_seen=seen, node_gpus=gpus)
        refused = [
            AssignmentStatus(
                workload_id=a.workload_id, epoch=a.epoch, rank=a.rank, phase=AssignmentPhase.REJECTED, message=message
            )
            for a, message in plan.reject
        ]
        return [a.workload_id for a in plan.start], refused

    started, refused = agent_plans([])
    assert not started and len(refused) == 1 and (refused[0].message or "").startswith("stale epoch")
    report = ReportRequest(protocol_version=PROTOCOL_VERSION, seq=1, sent_at=0.0, gpus=[], assignments=refused)
    with runtime.uow() as s:
        reports.apply_report(s, node_id=node.node_id, report=report)
    with runtime.read() as s:
        wl = s.get(Workload, wl_id)
        assert wl is not None and wl.state == WorkloadState.PENDING.value, wl and (wl.state, wl.reason)
        assert "requeued" in wl.reason
    # The current leader places it again; the same agent, still fencing, starts it.
    assert run_pass(runtime, PlacementEpoch.of(5, 1)).placed == 1
    started, refused = agent_plans(refused)
    assert started == [wl_id] and not refused
