"""A tenant's (or the operator's) view of workloads: one, a page of them, a rank's log."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controlplane.domain.enums import WorkloadState
from controlplane.domain.errors import InvalidRequest, NotFound
from controlplane.domain.workload import is_terminal
from controlplane.store.models import Workload, WorkloadLog
from controlplane.store.queries.workloads import WorkloadView, workload_views

MAX_PAGE = 200


def get(session: Session, *, tenant_id: str | None, workload_id: str, lock: bool = False) -> Workload:
    """Another tenant's workload answers exactly like a missing one (no existence oracle).

    ``lock`` takes the row for update, so a state change cannot race another writer's.
    """
    wl = session.get(Workload, workload_id, with_for_update=lock or None, populate_existing=lock)
    if wl is None or (tenant_id is not None and wl.tenant_id != tenant_id):
        raise NotFound(f"no workload {workload_id!r}")
    return wl


@dataclass(frozen=True)
class Page:
    items: list[WorkloadView]
    next_cursor: str | None


def view(session: Session, workload: Workload, *, history: bool = False) -> WorkloadView:
    return workload_views(session, [workload], history=history)[0]


def page(
    session: Session,
    *,
    tenant_id: str | None,
    state: WorkloadState | None,
    limit: int,
    cursor: str | None,
) -> Page:
    """Newest first, with allocations: four statements for any page size."""
    rows, next_cursor = list_page(session, tenant_id=tenant_id, state=state, limit=limit, cursor=cursor)
    return Page(workload_views(session, rows), next_cursor)


def list_page(
    session: Session,
    *,
    tenant_id: str | None,
    state: WorkloadState | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Workload], str | None]:
    """Newest first; ``cursor`` is the last id of the previous page."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE}")
    query = select(Workload).order_by(Workload.id.desc()).limit(limit + 1)
    if tenant_id is not None:
        query = query.where(Workload.tenant_id == tenant_id)
    if state is not None:
        query = query.where(Workload.state == state.value)
    if cursor is not None:
        query = query.where(Workload.id < cursor)
    rows = list(session.scalars(query).all())
    next_cursor = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], next_cursor


@dataclass(frozen=True)
class LogSlice:
    data: bytes
    next_offset: int
    complete: bool  # the workload has ended and nothing more will arrive


def read_log(
    session: Session, *, tenant_id: str | None, workload_id: str, rank: int, offset: int, limit: int
) -> LogSlice:
    wl = get(session, tenant_id=tenant_id, workload_id=workload_id)
    if rank < 0 or offset < 0 or not 1 <= limit <= 4 * 1024 * 1024:
        raise InvalidRequest("rank and offset must be >= 0 and limit between 1 and 4194304 bytes")
    rows = session.scalars(
        select(WorkloadLog)
        .where(
            WorkloadLog.workload_id == wl.id,
            WorkloadLog.rank == rank,
            WorkloadLog.offset + func.length(WorkloadLog.data) > offset,
        )
        .order_by(WorkloadLog.offset)
    ).all()
    out = bytearray()
    position = offset
    for row in rows:
        start = position - row.offset
        if start < 0:
            break  # a gap: never hand out bytes out of order
        piece = row.data[start:]
        take = piece[: limit - len(out)]
        out += take
        position += len(take)
        if len(out) >= limit:
            break
    return LogSlice(bytes(out), position, is_terminal(WorkloadState(wl.state)))
