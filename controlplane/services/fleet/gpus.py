"""Every GPU with its state as operators see it (``domain.gpu.derive``): from its presence, its
live allocation and whose it is, its node and its health."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.domain import gpu as gpu_states_
from controlplane.domain.enums import GpuHealth, NodeStatus, PriorityClass
from controlplane.domain.gpu import GpuState
from controlplane.store.models import Allocation, Gpu, Node, Workload


@dataclass(frozen=True)
class GpuRow:
    gpu: Gpu
    node: Node
    state: GpuState
    workload_id: str | None  # the live allocation's workload (kept while the GPU is lost, too)


def gpu_states(session: Session, *, node_ids: Collection[str] | None = None) -> list[GpuRow]:
    """Two statements whatever the fleet's size: the GPUs with their nodes, and the live allocations."""
    query = select(Gpu, Node).join(Node, Gpu.node_id == Node.id).order_by(Node.hostname, Gpu.index)
    live_query = (
        select(Allocation.gpu_id, Allocation.workload_id, Allocation.stop_generation, Workload.priority)
        .join(Workload, Workload.id == Allocation.workload_id)
        .where(Allocation.released_at.is_(None))
    )
    if node_ids is not None:
        ids = list(node_ids)
        query = query.where(Node.id.in_(ids))
        live_query = live_query.where(Allocation.node_id.in_(ids))
    live = {gpu_id: (wl_id, stop, priority) for gpu_id, wl_id, stop, priority in session.execute(live_query)}
    out = []
    for gpu, node in session.execute(query).all():
        held = live.get(gpu.id)
        state = gpu_states_.derive(
            present=gpu.present,
            holder=PriorityClass(held[2]) if held else None,
            stopping=held is not None and held[1] is not None,
            node_ready=node.status == NodeStatus.READY,
            health=GpuHealth(gpu.health),
            cordoned=node.cordoned,
        )
        out.append(GpuRow(gpu, node, state, held[0] if held else None))
    return out
