"""Tenant use cases on workloads: submit (idempotent), list, get, cancel, read logs."""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controlplane.domain.enums import WorkloadState
from controlplane.domain.errors import Conflict, InvalidRequest, NotFound, OverQuota
from controlplane.domain.ids import new_id
from controlplane.domain.specs import WorkloadSpec
from controlplane.domain.workload import is_terminal
from controlplane.scheduling.quota import check_quota
from controlplane.scheduling.snapshot import WorkloadRequest
from controlplane.services import fleet, lifecycle, snapshot
from controlplane.services.uow import wakeups
from controlplane.store.models import Allocation, Tenant, Workload, WorkloadLog
from controlplane.store.types import utcnow

MAX_PAGE = 200


@dataclass(frozen=True)
class Submitted:
    workload: Workload
    created: bool


def submit(
    session: Session,
    *,
    tenant_id: str,
    spec: WorkloadSpec,
    idempotency_key: str | None,
    default_max_duration_s: int,
) -> Submitted:
    fingerprint = spec.fingerprint()
    if idempotency_key is not None:
        existing = _by_key(session, tenant_id, idempotency_key)
        if existing is not None:
            return _replay(existing, fingerprint)
    capacity = fleet.capacity_by_model(session)
    if spec.gpu_model not in capacity:
        models = ", ".join(sorted(capacity)) or "none"
        raise InvalidRequest(f"GPU model {spec.gpu_model!r} is not offered here (offered: {models})")
    if spec.gpu_count > capacity[spec.gpu_model]:
        raise InvalidRequest(
            f"asks for {spec.gpu_count} GPUs; this site has {capacity[spec.gpu_model]} {spec.gpu_model}"
        )
    _check_quota(session, tenant_id=tenant_id, spec=spec, default_max_duration_s=default_max_duration_s)
    workload_id = new_id("wl")
    wl = Workload(
        id=workload_id,
        tenant_id=tenant_id,
        name=spec.name,
        gpu_count=spec.gpu_count,
        gpu_model=spec.gpu_model,
        nvlink=spec.nvlink.value,
        priority=spec.priority.value,
        command=list(spec.command),
        env=dict(spec.env),
        max_duration_s=spec.max_duration_s or default_max_duration_s,
        sim_utilization=spec.sim_utilization,
        state=WorkloadState.PENDING.value,
        reason="waiting for the scheduler",
        idempotency_key=idempotency_key,
        request_hash=fingerprint,
        master_port=20000 + zlib.crc32(workload_id.encode()) % 20000,
    )
    try:
        with session.begin_nested():
            session.add(wl)
            session.flush()
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key won the race.
        if idempotency_key is None:
            raise
        existing = _by_key(session, tenant_id, idempotency_key)
        if existing is None:
            raise
        return _replay(existing, fingerprint)
    lifecycle.record_created(session, wl)
    wakeups(session).scheduler = True
    return Submitted(wl, True)


def _by_key(session: Session, tenant_id: str, key: str) -> Workload | None:
    return session.scalar(select(Workload).where(Workload.tenant_id == tenant_id, Workload.idempotency_key == key))


def _replay(existing: Workload, fingerprint: str) -> Submitted:
    if existing.request_hash != fingerprint:
        raise Conflict("this Idempotency-Key was already used with a different request")
    return Submitted(existing, False)


def get(session: Session, *, tenant_id: str | None, workload_id: str, lock: bool = False) -> Workload:
    """Another tenant's workload answers exactly like a missing one (no existence oracle).

    ``lock`` takes the row for update, so a state change cannot race another writer's.
    """
    wl = session.get(Workload, workload_id, with_for_update=lock or None, populate_existing=lock)
    if wl is None or (tenant_id is not None and wl.tenant_id != tenant_id):
        raise NotFound(f"no workload {workload_id!r}")
    return wl


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


def cancel(session: Session, *, tenant_id: str | None, workload_id: str, reason: str) -> Workload:
    wl = get(session, tenant_id=tenant_id, workload_id=workload_id, lock=True)
    if is_terminal(WorkloadState(wl.state)):
        raise Conflict(f"workload {wl.id} is already {wl.state}")
    lifecycle.finish(session, wl, WorkloadState.CANCELLED, reason)
    return wl


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


def decode_chunk(data_b64: str) -> bytes:
    try:
        return base64.b64decode(data_b64, validate=True)
    except ValueError as exc:
        raise InvalidRequest(f"log chunk is not valid base64: {exc}") from exc


def _check_quota(session: Session, *, tenant_id: str, spec: WorkloadSpec, default_max_duration_s: int) -> None:
    """Reject at submission when the tenant's policy says so; "hold" tenants wait in the queue."""
    tenant = session.get(Tenant, tenant_id)
    if tenant is None or tenant.over_quota != "reject":
        return
    if tenant.max_gpus is None and tenant.gpu_hours_limit is None and tenant.spend_cap_usd is None:
        return
    now = utcnow()
    policy = snapshot.tenant_policies(session, now).get(tenant_id)
    assert policy is not None
    running = session.scalar(
        select(func.count())
        .select_from(Allocation)
        .join(Workload, Workload.id == Allocation.workload_id)
        .where(Workload.tenant_id == tenant_id, Allocation.released_at.is_(None))
    )
    request = WorkloadRequest(
        workload_id="new",
        gpu_count=spec.gpu_count,
        gpu_model=spec.gpu_model,
        nvlink=spec.nvlink,
        priority=spec.priority,
        submitted_at=now.timestamp(),
        tenant_id=tenant_id,
        max_duration_s=float(spec.max_duration_s or default_max_duration_s),
        price_usd_per_gpu_hour=tenant.price_usd_per_gpu_hour,
    )
    reason = check_quota(policy, request, int(running or 0))
    if reason is not None:
        raise OverQuota(f"rejected: {reason}")
