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
