"""Workload state changes and what they imply for allocations and agents.

Every transition goes through ``transition`` so it is checked against the state machine and
recorded with its reason. Ending a workload never frees its GPUs directly: it drops the
assignment from the nodes' desired state (bumping their generation) and the GPUs are released
when the agent confirms the process is gone (see ``nodes.apply_report``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from controlplane.domain.enums import WorkloadState
from controlplane.domain.reasons import PendingCode
from controlplane.domain.workload import check_transition
from controlplane.services.uow import wakeups
from controlplane.store.bulk import among
from controlplane.store.models import Allocation, Node, Preemption, Workload, WorkloadEvent, WorkloadRank
from controlplane.store.types import utcnow


def transition(
    session: Session, wl: Workload, target: WorkloadState, reason: str, *, now: datetime | None = None
) -> None:
    now = now or utcnow()
    current = WorkloadState(wl.state)
    check_transition(current, target)
    wl.state = target.value
    wl.reason = reason
    # Only pending work carries a pending-reason code; back to pending means requeued.
    wl.reason_code = PendingCode.REQUEUED.value if target is WorkloadState.PENDING else None
    if current is WorkloadState.PENDING:
        # A planned start is for pending work only (the first one stays, to be measured against).
        wl.expected_start_at = None
        wl.planned_domains = None
        wl.planned_at = None
    wl.updated_at = now
    if target is WorkloadState.SCHEDULED:
        wl.scheduled_at = now
    elif target is WorkloadState.RUNNING and wl.started_at is None:
        wl.started_at = now
    elif target in (
        WorkloadState.SUCCEEDED,
        WorkloadState.FAILED,
        WorkloadState.CANCELLED,
        WorkloadState.PREEMPTED,
    ):
        wl.finished_at = now
    session.add(
        WorkloadEvent(workload_id=wl.id, from_state=current.value, to_state=target.value, reason=reason, at=now)
    )


def bump_generations(session: Session, node_ids: Iterable[str]) -> dict[str, int]:
    """Atomically advance the nodes' desired-state generation (no lost update between writers)."""
    ids = sorted(set(node_ids))
    if not ids:
        return {}
    generations: dict[str, int] = {}
    for chosen in among(session, Node.id, ids):
        rows = session.execute(
            update(Node).where(chosen).values(generation=Node.generation + 1).returning(Node.id, Node.generation)
        ).all()
        generations.update({node_id: int(gen) for node_id, gen in rows})
    pending = wakeups(session)
    pending.nodes.update(ids)
    pending.generations.update(generations)
    return generations


def stop_allocations(session: Session, wl: Workload) -> None:
    """Drop the workload from its nodes' desired state; GPUs stay held until agents confirm."""
    live = session.scalars(
        select(Allocation).where(
            Allocation.workload_id == wl.id,
            Allocation.released_at.is_(None),
            Allocation.stop_generation.is_(None),
        )
    ).all()
    generations = bump_generations(session, (a.node_id for a in live))
    for alloc in live:
        alloc.stop_generation = generations[alloc.node_id]


def release(session: Session, allocations: Iterable[Allocation], *, now: datetime | None = None) -> int:
    now = now or utcnow()
    count = 0
    for alloc in allocations:
        if alloc.released_at is None:
            alloc.released_at = now
            count += 1
    if count:
        wakeups(session).scheduler = True
    return count


def finish(session: Session, wl: Workload, target: WorkloadState, reason: str, *, now: datetime | None = None) -> None:
    transition(session, wl, target, reason, now=now)
    stop_allocations(session, wl)


def requeue(session: Session, wl: Workload, reason: str, *, now: datetime | None = None) -> None:
    """Back to pending for a fresh placement; the old processes are stopped where reachable."""
    transition(session, wl, WorkloadState.PENDING, reason, now=now)
    stop_allocations(session, wl)
    for rank in session.scalars(select(WorkloadRank).where(WorkloadRank.workload_id == wl.id)).all():
        session.delete(rank)
    wl.epoch = None
    wl.scheduled_at = None
    wakeups(session).scheduler = True


def record_created(session: Session, wl: Workload) -> None:
    session.add(
        WorkloadEvent(
            workload_id=wl.id,
            from_state=None,
            to_state=wl.state,
            reason="submitted",
            at=wl.created_at or utcnow(),
        )
    )


def mark_preemptions_released(session: Session, workload_ids: set[str], now: datetime) -> None:
    """When a preempted workload's last GPU is free, its preemption records say when."""
    for wl_id in workload_ids:
        still_held = session.scalar(
            select(Allocation.id).where(Allocation.workload_id == wl_id, Allocation.released_at.is_(None)).limit(1)
        )
        if still_held is None:
            for record in session.scalars(
                select(Preemption).where(Preemption.victim_id == wl_id, Preemption.released_at.is_(None))
            ).all():
                record.released_at = now
