"""The scheduler's shell: build the snapshot, run the pure core, commit decisions.

The commit is one transaction. Every allocation carries the scheduler's fencing epoch, and the
partial unique index on live allocations makes a second owner of a GPU impossible even if two
schedulers ever run at once: the loser's transaction fails as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from controlplane.domain.enums import NodeStatus, NvlinkPolicy, PriorityClass, WorkloadState
from controlplane.scheduling.snapshot import (
    FleetSnapshot,
    GpuSlot,
    NodeView,
    Placement,
    Unplaced,
    WorkloadRequest,
)
from controlplane.services import lifecycle
from controlplane.services.gpu_state import NODE_ACTIONS
from controlplane.services.uow import wakeups
from controlplane.store.models import Allocation, Gpu, Node, SchedulerFence, Workload, WorkloadRank
from controlplane.store.types import utcnow


def build_snapshot(session: Session) -> FleetSnapshot:
    allocated = set(session.scalars(select(Allocation.gpu_id).where(Allocation.released_at.is_(None))).all())
    gpus_by_node: dict[str, list[GpuSlot]] = {}
    node_actions: dict[str, str] = {}
    peer_drain_nodes: set[str] = set()
    for gpu in session.scalars(select(Gpu).where(Gpu.present)).all():
        gpus_by_node.setdefault(gpu.node_id, []).append(
            GpuSlot(
                gpu_id=gpu.id,
                index=gpu.index,
                model=gpu.model,
                # Degraded GPUs still run work (the tenant is told); unhealthy ones admit none.
                healthy=gpu.health != "unhealthy",
                allocated=gpu.id in allocated,
            )
        )
        if gpu.health_action in NODE_ACTIONS:
            node_actions[gpu.node_id] = gpu.health_action
        if gpu.health_action == "drain_nvlink_peers":
            peer_drain_nodes.add(gpu.node_id)
    all_nodes = session.scalars(select(Node).order_by(Node.id)).all()
    draining_domains = {n.nvlink_domain for n in all_nodes if n.id in peer_drain_nodes and n.nvlink_domain}
    nodes = []
    for node in all_nodes:
        nodes.append(
            NodeView(
                node_id=node.id,
                domain=node.nvlink_domain,
                unschedulable=_unschedulable(node, node_actions.get(node.id)),
                gpus=tuple(gpus_by_node.get(node.id, ())),
                nvlink_draining=node.id in peer_drain_nodes or node.nvlink_domain in draining_domains,
            )
        )
    return FleetSnapshot(nodes=tuple(nodes))


def _unschedulable(node: Node, gpu_action: str | None) -> str:
    if node.status != NodeStatus.READY.value:
        return node.status
    if gpu_action is not None:
        return gpu_action.replace("_", " ")  # "reboot node": a GPU's health asks for it
    if node.draining:
        return "draining"
    if node.cordoned:
        return "cordoned"
    return ""


def pending_queue(session: Session) -> list[WorkloadRequest]:
    rows = session.scalars(select(Workload).where(Workload.state == WorkloadState.PENDING.value)).all()
    return [
        WorkloadRequest(
            workload_id=w.id,
            gpu_count=w.gpu_count,
            gpu_model=w.gpu_model,
            nvlink=NvlinkPolicy(w.nvlink),
            priority=PriorityClass(w.priority),
            submitted_at=w.created_at.timestamp(),
        )
        for w in rows
    ]


class FencedOut(RuntimeError):
    """A scheduler with a newer epoch has committed: this one lost its lease and must stand down."""


def check_fence(session: Session, leader_epoch: int) -> None:
    """Advance the database's fence to this leader's epoch, or fail if a newer leader got there.

    The row lock this takes also serialises commits of two schedulers that both think they lead.
    """
    advanced = session.execute(
        update(SchedulerFence)
        .where(SchedulerFence.id == 1, SchedulerFence.epoch <= leader_epoch)
        .values(epoch=leader_epoch)
        .returning(SchedulerFence.id)
    ).all()
    if advanced:
        return
    current = session.get(SchedulerFence, 1)
    if current is None:
        session.add(SchedulerFence(id=1, epoch=leader_epoch))
        session.flush()
        return
    raise FencedOut(f"scheduler epoch {leader_epoch} is fenced out by epoch {current.epoch}")


@dataclass(frozen=True)
class CommitResult:
    placed: int
    still_pending: int


def commit(
    session: Session,
    *,
    decisions: list[Placement | Unplaced],
    epoch: int,
    now: datetime | None = None,
) -> CommitResult:
    now = now or utcnow()
    check_fence(session, epoch >> 32)
    placed = 0
    touched_nodes: set[str] = set()
    for decision in decisions:
        wl = session.get(Workload, decision.workload_id, with_for_update=True, populate_existing=True)
        if wl is None or wl.state != WorkloadState.PENDING.value:
            continue  # cancelled (or placed by someone else) since the snapshot
        if isinstance(decision, Unplaced):
            if wl.reason != decision.reason:
                wl.reason = decision.reason
            continue
        for rank_no, rank in enumerate(decision.ranks):
            session.add(WorkloadRank(workload_id=wl.id, rank=rank_no, node_id=rank.node_id, phase="assigned"))
            for gpu_id in rank.gpu_ids:
                session.add(
                    Allocation(
                        workload_id=wl.id,
                        gpu_id=gpu_id,
                        node_id=rank.node_id,
                        rank=rank_no,
                        epoch=epoch,
                        created_at=now,
                    )
                )
            touched_nodes.add(rank.node_id)
        wl.epoch = epoch
        nodes = len(decision.ranks)
        lifecycle.transition(
            session,
            wl,
            WorkloadState.SCHEDULED,
            f"placed on {decision.gpu_count} GPUs across {nodes} node{'s' if nodes > 1 else ''}",
            now=now,
        )
        placed += 1
    session.flush()  # the unique index speaks here, inside the transaction
    lifecycle.bump_generations(session, touched_nodes)
    if placed:
        wakeups(session).nodes.update(touched_nodes)
    return CommitResult(placed=placed, still_pending=sum(isinstance(d, Unplaced) for d in decisions))
