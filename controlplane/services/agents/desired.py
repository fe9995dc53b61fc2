"""What a node must run: its desired state, long-polled by its agent."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from agents.protocol import (
    Assignment,
    DesiredState,
)
from controlplane.domain.enums import PriorityClass, WorkloadState
from controlplane.domain.errors import Forbidden
from controlplane.domain.workload import is_terminal
from controlplane.scheduling.preemption import policy
from controlplane.store.models import (
    Allocation,
    Gpu,
    Node,
    Workload,
    WorkloadRank,
)


def desired_state(session: Session, *, node_id: str, stop_grace_s: float = 30.0) -> DesiredState:
    """The assignments the node must run now, each with its stop grace (the one rule of
    ``scheduling.preemption.policy``). Four statements whatever the node runs."""
    node = session.get(Node, node_id)
    if node is None:
        raise Forbidden("this node no longer exists")
    allocs = session.execute(
        select(Allocation.workload_id, Allocation.epoch, Allocation.rank, Gpu.uuid)
        .join(Gpu, Gpu.id == Allocation.gpu_id)
        .where(
            Allocation.node_id == node_id,
            Allocation.released_at.is_(None),
            Allocation.stop_generation.is_(None),
        )
        .order_by(Allocation.workload_id, Gpu.index)
    ).all()
    by_workload: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for workload_id, epoch, rank, uuid in allocs:
        by_workload[workload_id].append((epoch, rank, uuid))
    if not by_workload:
        return DesiredState(node_id=node_id, generation=node.generation, assignments=[])
    workloads = {w.id: w for w in session.scalars(select(Workload).where(Workload.id.in_(list(by_workload))))}
    peers: dict[str, list[str]] = defaultdict(list)
    for workload_id, _, address in session.execute(
        select(WorkloadRank.workload_id, WorkloadRank.rank, Node.address)
        .join(Node, Node.id == WorkloadRank.node_id)
        .where(WorkloadRank.workload_id.in_(list(by_workload)))
        .order_by(WorkloadRank.workload_id, WorkloadRank.rank)
    ):
        peers[workload_id].append(address)
    assignments = []
    for workload_id, rows in by_workload.items():
        wl = workloads.get(workload_id)
        if wl is None or is_terminal(WorkloadState(wl.state)):
            continue
        epoch, rank, _ = rows[0]
        addresses = peers[workload_id]
        assignments.append(
            Assignment(
                workload_id=workload_id,
                epoch=epoch,
                rank=rank,
                world_size=len(addresses),
                gpu_uuids=[uuid for _, _, uuid in rows],
                command=list(wl.command),
                env=dict(wl.env),
                master_addr=addresses[0],
                master_port=wl.master_port or 29500,
                peers=addresses,
                sim_utilization=wl.sim_utilization,
                stop_grace_s=policy.stop_grace_s(PriorityClass(wl.priority), stop_grace_s),
            )
        )
    return DesiredState(node_id=node_id, generation=node.generation, assignments=assignments)


def current_generation(session: Session, node_id: str) -> int:
    gen = session.scalar(select(Node.generation).where(Node.id == node_id))
    if gen is None:
        raise Forbidden("this node no longer exists")
    return int(gen)
