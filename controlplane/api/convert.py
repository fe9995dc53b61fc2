"""ORM rows -> response bodies."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Query
from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.api.schemas import (
    AllocationOut,
    EventOut,
    GpuOut,
    KeyOut,
    NodeOut,
    RankOut,
    WorkloadOut,
    WorkloadPage,
)
from controlplane.domain.enums import WorkloadState
from controlplane.live.nodes import EnergyCount
from controlplane.services import workloads
from controlplane.services.fleet import GpuState
from controlplane.store.models import Allocation, ApiKey, Gpu, Node, Workload, WorkloadEvent, WorkloadRank


@dataclass(frozen=True)
class WorkloadQuery:
    """The list filters both audiences use; FastAPI reads them from the query string."""

    state: WorkloadState | None = None
    limit: Annotated[int, Query(ge=1, le=workloads.MAX_PAGE)] = 50
    cursor: Annotated[str | None, Query(max_length=40)] = None


def workload_page(session: Session, *, tenant_id: str | None, query: WorkloadQuery) -> WorkloadPage:
    rows, next_cursor = workloads.list_page(
        session, tenant_id=tenant_id, state=query.state, limit=query.limit, cursor=query.cursor
    )
    return WorkloadPage(items=[workload_out(session, w) for w in rows], next_cursor=next_cursor)


def workload_out(session: Session, wl: Workload, *, history: bool = False) -> WorkloadOut:
    return WorkloadOut(
        id=wl.id,
        name=wl.name,
        state=wl.state,
        reason=wl.reason,
        pending_reason=wl.reason if wl.state == "pending" else None,
        gpus=wl.gpu_count,
        gpu_model=wl.gpu_model,
        nvlink=wl.nvlink,
        priority=wl.priority,
        command=list(wl.command),
        env=dict(wl.env),
        max_duration_s=wl.max_duration_s,
        created_at=wl.created_at,
        scheduled_at=wl.scheduled_at,
        started_at=wl.started_at,
        finished_at=wl.finished_at,
        allocation=_allocation(session, wl),
        history=_history(session, wl) if history else None,
    )


def _allocation(session: Session, wl: Workload) -> AllocationOut | None:
    if wl.epoch is None:
        return None
    rows = session.execute(
        select(Allocation, Gpu.uuid)
        .join(Gpu, Gpu.id == Allocation.gpu_id)
        .where(Allocation.workload_id == wl.id, Allocation.epoch == wl.epoch)
        .order_by(Allocation.rank, Gpu.index)
    ).all()
    if not rows:
        return None
    uuids: dict[int, list[str]] = defaultdict(list)
    for alloc, uuid in rows:
        uuids[alloc.rank].append(uuid)
    ranks = []
    for rank, node in session.execute(
        select(WorkloadRank, Node)
        .join(Node, Node.id == WorkloadRank.node_id)
        .where(WorkloadRank.workload_id == wl.id)
        .order_by(WorkloadRank.rank)
    ).all():
        ranks.append(
            RankOut(
                rank=rank.rank,
                node_id=node.id,
                hostname=node.hostname,
                address=node.address,
                gpu_uuids=uuids.get(rank.rank, []),
                phase=rank.phase,
                exit_code=rank.exit_code,
            )
        )
    return AllocationOut(
        epoch=wl.epoch,
        gpu_count=len(rows),
        ranks=ranks,
        released=all(alloc.released_at is not None for alloc, _ in rows),
    )


def _history(session: Session, wl: Workload) -> list[EventOut]:
    return [
        EventOut(from_state=e.from_state, to_state=e.to_state, reason=e.reason, at=e.at)
        for e in session.scalars(
            select(WorkloadEvent).where(WorkloadEvent.workload_id == wl.id).order_by(WorkloadEvent.id)
        ).all()
    ]


def gpu_out(st: GpuState, telemetry: dict[str, Any] | None, energy: EnergyCount | None = None) -> GpuOut:
    return GpuOut(
        id=st.gpu.id,
        uuid=st.gpu.uuid,
        index=st.gpu.index,
        model=st.gpu.model,
        node_id=st.node.id,
        hostname=st.node.hostname,
        state=st.state,
        workload_id=st.workload_id,
        health=st.gpu.health,
        health_action=st.gpu.health_action,
        health_reason=st.gpu.health_reason,
        present=st.gpu.present,
        memory_total_mib=st.gpu.memory_total_mib,
        telemetry=telemetry,
        energy_mj_total=energy.total_mj if energy else None,
    )


def node_out(
    node: Node, gpus: list[GpuOut], *, lease_alive: bool, reports: tuple[int, int, int | None] = (0, 0, None)
) -> NodeOut:
    return NodeOut(
        id=node.id,
        hostname=node.hostname,
        address=node.address,
        site_id=node.site_id,
        rack_id=node.rack_id,
        status=node.status,
        status_reason=node.status_reason,
        cordoned=node.cordoned,
        draining=node.draining,
        cordon_reason=node.cordon_reason,
        nvlink_domain=node.nvlink_domain,
        backend=node.backend,
        driver_version=node.driver_version,
        lease_alive=lease_alive,
        reports_accepted=reports[0],
        reports_duplicate=reports[1],
        last_seq=reports[2],
        gpus=gpus,
    )


def key_out(key: ApiKey, secret: str | None = None) -> KeyOut:
    return KeyOut(
        id=key.id,
        scope=key.scope,
        name=key.name,
        display_prefix=key.display_prefix,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
        secret=secret,
    )
