"""Queue sort: priority class, then reserved work within its tenant's reservation, then age.

Whether a reserved request is within the reservation is decided here from the snapshot: the
tenant's running reserved GPUs plus its older reserved requests, in age order, up to
``reserved_gpus``. The core decides preemption rights again at the request's turn, from what the
pass has admitted so far.
"""

from __future__ import annotations

from collections.abc import Iterable

from controlplane.domain.enums import PRIORITY_RANK, PriorityClass
from controlplane.scheduling.snapshot import FleetSnapshot, WorkloadRequest


def within_reservation(queue: Iterable[WorkloadRequest], snapshot: FleetSnapshot) -> set[str]:
    reserved = [w for w in queue if w.priority is PriorityClass.RESERVED]
    if not reserved or not snapshot.tenants:
        return set()
    used: dict[str, int] = {}
    for run in snapshot.running:
        if run.priority is PriorityClass.RESERVED:
            used[run.tenant_id] = used.get(run.tenant_id, 0) + run.gpu_count
    within: set[str] = set()
    for w in sorted(reserved, key=lambda w: (w.submitted_at, w.workload_id)):
        policy = snapshot.tenants.get(w.tenant_id)
        if policy is None:
            continue
        after = used.get(w.tenant_id, 0) + w.gpu_count
        if after <= policy.reserved_gpus:
            used[w.tenant_id] = after
            within.add(w.workload_id)
    return within


def queue_order(queue: Iterable[WorkloadRequest], snapshot: FleetSnapshot | None = None) -> list[WorkloadRequest]:
    items = list(queue)
    within = within_reservation(items, snapshot) if snapshot is not None else set()
    return sorted(
        items,
        key=lambda w: (PRIORITY_RANK[w.priority], w.workload_id not in within, w.submitted_at, w.workload_id),
    )


def fair_share_order(queue: Iterable[WorkloadRequest], snapshot: FleetSnapshot) -> list[WorkloadRequest]:
    """Priority class first, as ``queue_order``; inside a class, planned starts, then fair shares.

    - Reserved work within its tenant's reservation goes first in its class, as before.
    - Requests holding a planned start from an earlier pass come next, in the order they were
      planned: the GPUs held for them are theirs before any request of their class planned or
      arrived since, so a plan is met unless higher-class work arrives.
    - The rest by weighted fair share (start-time fair queueing): a request's key is its
      tenant's GPUs of that class already running plus those of the tenant's older requests of
      the class, over the tenant's share weight (its own size left out, so a large gang is not
      pushed behind every small request of the other tenants). Tenants flooding the queue
      interleave with the others in proportion to their weights instead of starving them; within
      a tenant, age order holds.
    """
    items = list(queue)
    within = within_reservation(items, snapshot)
    running: dict[tuple[str, PriorityClass], int] = {}
    for run in snapshot.running:
        if not run.preempting:
            tc = (run.tenant_id, run.priority)
            running[tc] = running.get(tc, 0) + run.gpu_count
    tenants = snapshot.tenants
    finish: dict[str, float] = {}
    used: dict[tuple[str, PriorityClass], int] = {}
    for w in sorted(items, key=lambda w: (w.submitted_at, w.workload_id)):
        if w.plan is not None or w.workload_id in within:
            continue
        tc = (w.tenant_id, w.priority)
        total = used.get(tc)
        if total is None:
            total = running.get(tc, 0)
        policy = tenants.get(w.tenant_id)
        weight = policy.share_weight if policy is not None and policy.share_weight > 0 else 1.0
        finish[w.workload_id] = total / weight
        used[tc] = total + w.gpu_count

    def order_key(w: WorkloadRequest) -> tuple[int, int, float, float, str]:
        rank = PRIORITY_RANK[w.priority]
        if w.workload_id in within:
            return (rank, 0, w.submitted_at, 0.0, w.workload_id)
        if w.plan is not None:
            made = w.plan.planned_at if w.plan.planned_at is not None else w.plan.start_at
            return (rank, 1, made, w.submitted_at, w.workload_id)
        return (rank, 2, finish[w.workload_id], w.submitted_at, w.workload_id)

    return sorted(items, key=order_key)
