"""Node liveness, run periodically by the workers.

A node whose lease (renewed by every report) has expired is ``unreachable``: it admits no work,
but its workloads are left alone for a grace period, since a network blip is more common than
a dead tray. After the grace, its workloads are requeued or failed by policy. GPUs on the node
stay held until the agent comes back and confirms the processes are gone, or the operator
removes the node, so a partitioned node that is in fact still running a tenant's process never
gets a second tenant.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.domain.enums import TERMINAL_STATES, NodeStatus, UnreachablePolicy, WorkloadState
from controlplane.live.nodes import LiveState
from controlplane.services.uow import UnitOfWork, wakeups
from controlplane.services.workloads import lifecycle
from controlplane.store.models import Allocation, Node, Workload


@dataclass(frozen=True)
class SweepResult:
    marked_unreachable: list[str]
    requeued: list[str]
    failed: list[str]


def mark_unreachable(session: Session, *, expired_node_ids: list[str], now: datetime) -> list[str]:
    if not expired_node_ids:
        return []
    marked = []
    for node in session.scalars(
        select(Node).where(Node.id.in_(expired_node_ids), Node.status == NodeStatus.READY.value)
    ).all():
        node.status = NodeStatus.UNREACHABLE.value
        node.status_reason = "lease expired: no report within the lease TTL"
        node.status_changed_at = now
        marked.append(node.id)
    wakeups(session).invalidate.update(marked)  # its next report must reach SQL to make it ready
    return marked


def handle_lost_nodes(
    session: Session, *, now: datetime, grace_s: float, policy: UnreachablePolicy
) -> tuple[list[str], list[str]]:
    cutoff = now - timedelta(seconds=grace_s)
    lost = session.scalars(
        select(Node.id).where(Node.status == NodeStatus.UNREACHABLE.value, Node.status_changed_at <= cutoff)
    ).all()
    if not lost:
        return [], []
    workload_ids = sorted(
        set(
            session.scalars(
                select(Allocation.workload_id).where(
                    Allocation.node_id.in_(lost),
                    Allocation.released_at.is_(None),
                    Allocation.stop_generation.is_(None),
                )
            ).all()
        )
    )
    requeued, failed = [], []
    for workload_id in workload_ids:
        wl = session.get(Workload, workload_id, with_for_update=True, populate_existing=True)
        if wl is None or WorkloadState(wl.state) in TERMINAL_STATES:
            continue
        reason = f"a node of this workload has been unreachable for more than {grace_s:g} s"
        if policy is UnreachablePolicy.REQUEUE:
            lifecycle.requeue(session, wl, reason + "; requeued", now=now)
            requeued.append(wl.id)
        else:
            lifecycle.finish(session, wl, WorkloadState.FAILED, reason, now=now)
            failed.append(wl.id)
    if requeued or failed:
        wakeups(session).scheduler = True
    return requeued, failed


def sweep(*, live: LiveState, uow: UnitOfWork, now_s: float, grace_s: float, policy: UnreachablePolicy) -> SweepResult:
    """Mark nodes whose leases expired unreachable; handle the workloads of nodes lost past the
    grace. Redis is read first, outside any transaction; each step is its own unit of work."""
    expired = live.expired_leases(now=now_s)
    now = datetime.fromtimestamp(now_s, tz=UTC)
    with uow() as session:
        marked = mark_unreachable(session, expired_node_ids=expired, now=now)
    with uow() as session:
        requeued, failed = handle_lost_nodes(session, now=now, grace_s=grace_s, policy=policy)
    return SweepResult(marked_unreachable=marked, requeued=requeued, failed=failed)
