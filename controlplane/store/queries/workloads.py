"""Workloads as tenants and operators read them, with their allocation and history.

A page of N workloads costs three statements (the rows, their allocations with GPU UUIDs, their
ranks with node addresses), and one more for history: never one per workload.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.store.models import Allocation, Gpu, Node, Workload, WorkloadEvent, WorkloadRank


@dataclass(frozen=True, slots=True)
class RankView:
    rank: int
    node_id: str
    hostname: str
    address: str
    gpu_uuids: tuple[str, ...]
    phase: str
    exit_code: int | None


@dataclass(frozen=True, slots=True)
class AllocationView:
    epoch: int
    gpu_count: int
    ranks: tuple[RankView, ...]
    released: bool


@dataclass(frozen=True, slots=True)
class EventView:
    from_state: str | None
    to_state: str
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class WorkloadView:
    workload: Workload  # the row's own columns; detached from the session once it closes
    allocation: AllocationView | None
    history: tuple[EventView, ...] | None = None


def workload_views(session: Session, rows: Sequence[Workload], *, history: bool = False) -> list[WorkloadView]:
    if not rows:
        return []
    ids = [w.id for w in rows]
    epochs = {w.id: w.epoch for w in rows if w.epoch is not None}
    gpus: dict[tuple[str, int], list[str]] = defaultdict(list)
    released: dict[str, bool] = {}
    counts: dict[str, int] = defaultdict(int)
    if epochs:
        for wl_id, rank, epoch, released_at, uuid in session.execute(
            select(Allocation.workload_id, Allocation.rank, Allocation.epoch, Allocation.released_at, Gpu.uuid)
            .join(Gpu, Gpu.id == Allocation.gpu_id)
            .where(Allocation.workload_id.in_(list(epochs)))
            .order_by(Allocation.workload_id, Allocation.rank, Gpu.index)
        ):
            if epochs.get(wl_id) != epoch:
                continue  # an earlier placement of a requeued workload
            gpus[(wl_id, rank)].append(uuid)
            counts[wl_id] += 1
            released[wl_id] = released.get(wl_id, True) and released_at is not None
    ranks: dict[str, list[RankView]] = defaultdict(list)
    if counts:
        for r, hostname, address in session.execute(
            select(WorkloadRank, Node.hostname, Node.address)
            .join(Node, Node.id == WorkloadRank.node_id)
            .where(WorkloadRank.workload_id.in_(list(counts)))
            .order_by(WorkloadRank.workload_id, WorkloadRank.rank)
        ):
            ranks[r.workload_id].append(
                RankView(
                    rank=r.rank,
                    node_id=r.node_id,
                    hostname=hostname,
                    address=address,
                    gpu_uuids=tuple(gpus.get((r.workload_id, r.rank), ())),
                    phase=r.phase,
                    exit_code=r.exit_code,
                )
            )
    events: dict[str, list[EventView]] = defaultdict(list)
    if history:
        for e in session.scalars(
            select(WorkloadEvent).where(WorkloadEvent.workload_id.in_(ids)).order_by(WorkloadEvent.id)
        ):
            events[e.workload_id].append(EventView(e.from_state, e.to_state, e.reason, e.at))
    out = []
    for w in rows:
        allocation = None
        if w.epoch is not None and counts.get(w.id):
            allocation = AllocationView(
                epoch=w.epoch, gpu_count=counts[w.id], ranks=tuple(ranks.get(w.id, ())), released=released[w.id]
            )
        out.append(WorkloadView(w, allocation, tuple(events.get(w.id, ())) if history else None))
    return out
