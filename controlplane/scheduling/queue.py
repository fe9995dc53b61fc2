"""Queue sort: priority class, then reserved work within its tenant's reservation, then age.

Whether a reserved request is within the reservation is decided here from the snapshot: the
tenant's running reserved GPUs plus its older reserved requests, in age order, up to
``reserved_gpus``. The core decides preemption rights again at the request's turn, from what the
pass has admitted so far.

A reservation buys its GPUs, not a class above everyone for whatever else the tenant asks:
with fair shares (``fair_share_order``), reserved work beyond the reservation competes with
on_demand work (``competing_rank``), as Kueue's workloads borrowing beyond their nominal quota
do, and has on_demand's preemption rights (``preemption.policy``). It is still never a victim.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from operator import attrgetter
from typing import Any

from controlplane.domain.enums import PRIORITY_RANK, PriorityClass
from controlplane.scheduling.snapshot import FleetSnapshot, WorkloadRequest


def within_reservation(queue: Iterable[WorkloadRequest], snapshot: FleetSnapshot) -> set[str]:
    tenants = snapshot.tenants
    if not tenants:
        return set()
    cap = {t: p.reserved_gpus for t, p in tenants.items()}
    reserved = [w for w in queue if w.priority is _RESERVED_CLASS and w.tenant_id in cap]
    if not reserved:
        return set()
    used: dict[str, int] = {}
    for run in snapshot.running:
        if run.priority is _RESERVED_CLASS:
            used[run.tenant_id] = used.get(run.tenant_id, 0) + run.gpu_count
    within: set[str] = set()
    _by_age(reserved)
    for w in reserved:
        after = used.get(w.tenant_id, 0) + w.gpu_count
        if after <= cap[w.tenant_id]:
            used[w.tenant_id] = after
            within.add(w.workload_id)
    return within


_RESERVED_CLASS = PriorityClass.RESERVED


_RESERVED = PRIORITY_RANK[PriorityClass.RESERVED]
_ON_DEMAND = PRIORITY_RANK[PriorityClass.ON_DEMAND]


def competing_rank(priority: PriorityClass, *, within: bool) -> int:
    """The class rank a request competes in under fair shares: reserved work beyond its
    tenant's reservation competes with on_demand work; every other request in its own class."""
    rank = PRIORITY_RANK[priority]
    return _ON_DEMAND if rank == _RESERVED and not within else rank


# Outside a reservation, per class (one lookup per request in the fair-share loop).
_RANK_OUTSIDE = {p: competing_rank(p, within=False) for p in PriorityClass}


def queue_order(
    queue: Iterable[WorkloadRequest], snapshot: FleetSnapshot | None = None, within: Collection[str] | None = None
) -> list[WorkloadRequest]:
    """``within``: ``within_reservation(queue, snapshot)`` when the caller has it."""
    items = list(queue)
    if within is None:
        within = within_reservation(items, snapshot) if snapshot is not None else set()
    return sorted(
        items,
        key=lambda w: (PRIORITY_RANK[w.priority], w.workload_id not in within, w.submitted_at, w.workload_id),
    )


def fair_share_order(
    queue: Iterable[WorkloadRequest], snapshot: FleetSnapshot, within: Collection[str] | None = None
) -> list[WorkloadRequest]:
    """Priority class first, as ``queue_order``; inside a class, planned starts, then fair shares.

    - Reserved work within its tenant's reservation goes first in its class, as before; reserved
      work beyond it is ordered with on_demand work (``competing_rank``), its share counting
      the tenant's reserved GPUs running beyond the reservation.
    - Requests holding a planned start from an earlier pass come next, in the order they were
      planned: the GPUs held for them are theirs before any request of their class planned or
      arrived since, so a plan is met unless higher-class work arrives. Gangs larger than
      ``rules.large_gang_gpus`` come first among them (``core.SchedulingPass.decide`` lets them
      plan as if the smaller plans gave way).
    - The rest by weighted fair share (start-time fair queueing): a request's key is its
      tenant's GPUs of that class already running plus those of the tenant's older requests of
      the class, over the tenant's share weight (its own size left out, so a large gang is not
      pushed behind every small request of the other tenants). Tenants flooding the queue
      interleave with the others in proportion to their weights instead of starving them; within
      a tenant, age order holds.
    """
    items = list(queue)
    if within is None:
        within = within_reservation(items, snapshot)
    tenants = snapshot.tenants
    running: dict[tuple[str, int], int] = {}  # (tenant, competing rank) -> GPUs
    for run in snapshot.running:
        if not run.preempting:
            tc = (run.tenant_id, PRIORITY_RANK[run.priority])
            running[tc] = running.get(tc, 0) + run.gpu_count
    for (tenant, rank), n in list(running.items()):
        if rank == _RESERVED:
            policy = tenants.get(tenant)
            beyond = n - (policy.reserved_gpus if policy is not None else 0)
            if beyond > 0:
                running[(tenant, _ON_DEMAND)] = running.get((tenant, _ON_DEMAND), 0) + beyond
    # Buckets per (class, group), group 0 within a reservation, 1 planned, 2 fair share, joined in
    # order. Each is sorted by stable sorts on one attribute at a time, last key first: no key
    # tuple per request (ten thousand a campus pass, each one the garbage collector's to count),
    # ties in the queue's order as one sort by the whole key would leave them.
    buckets: dict[tuple[int, int], list[WorkloadRequest]] = {}
    fair: list[WorkloadRequest] = []
    for w in items:
        if w.workload_id in within:
            buckets.setdefault((PRIORITY_RANK[w.priority], 0), []).append(w)
        elif w.plan is not None:
            buckets.setdefault((_RANK_OUTSIDE[w.priority], 1), []).append(w)
        else:
            fair.append(w)
    # Fair shares in age order; each class's bucket gets its requests in that order, their
    # shares beside them (a stable sort of positions by share then leaves age order in ties).
    _by_age(fair)
    shares: dict[int, list[float]] = {}
    acc: dict[tuple[str, int], list[Any]] = {}  # (tenant, rank): [GPUs so far, weight, bucket]
    for w in fair:
        rank = _RANK_OUTSIDE[w.priority]
        tc = (w.tenant_id, rank)
        state = acc.get(tc)
        if state is None:
            policy = tenants.get(w.tenant_id)
            weight = policy.share_weight if policy is not None and policy.share_weight > 0 else 1.0
            if rank not in shares:
                shares[rank] = []
                buckets[(rank, 2)] = []
            state = acc[tc] = [running.get(tc, 0), weight, buckets[(rank, 2)], shares[rank]]
        total = state[0]
        state[2].append(w)
        state[3].append(total / state[1])
        state[0] = total + w.gpu_count
    out: list[WorkloadRequest] = []
    for (rank, group), ws in sorted(buckets.items()):
        if group == 2:
            share = shares[rank]
            out += [ws[i] for i in sorted(range(len(ws)), key=share.__getitem__)]
            continue
        _by_age(ws)
        if group == 1:
            ws.sort(key=_planned_at)
            large = snapshot.rules.large_gang_gpus
            if large:
                ws.sort(key=lambda w: w.gpu_count <= large)
        out += ws
    return out


_SUBMITTED_AT = attrgetter("submitted_at")
_WORKLOAD_ID = attrgetter("workload_id")


def _by_age(ws: list[WorkloadRequest]) -> None:
    """In place, by (submitted_at, workload_id), ties in their order."""
    ws.sort(key=_WORKLOAD_ID)
    ws.sort(key=_SUBMITTED_AT)


def _planned_at(w: WorkloadRequest) -> float:
    assert w.plan is not None
    return w.plan.planned_at if w.plan.planned_at is not None else w.plan.start_at
