"""A tenant submits a workload: validated, idempotent by key, refused at once when over a quota
the tenant's policy rejects."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controlplane.domain.enums import OverQuotaPolicy, WorkloadState
from controlplane.domain.errors import Conflict, InvalidRequest, OverQuota
from controlplane.domain.ids import new_id
from controlplane.domain.reasons import PendingCode
from controlplane.domain.specs import WorkloadSpec
from controlplane.scheduling.quota import check_quota
from controlplane.scheduling.snapshot import WorkloadRequest
from controlplane.services.fleet import capacity as fleet_capacity
from controlplane.services.uow import wakeups
from controlplane.services.workloads import lifecycle, quota
from controlplane.store.models import Tenant, Workload
from controlplane.store.types import utcnow


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
    max_duration_s = spec.max_duration_s or default_max_duration_s
    if spec.checkpoint_interval_s is not None and spec.checkpoint_interval_s > max_duration_s:
        raise InvalidRequest(
            f"checkpoint_interval_s ({spec.checkpoint_interval_s} s) is above the workload's max duration "
            f"({max_duration_s} s)"
        )
    capacity = fleet_capacity.capacity_by_model(session)
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
        max_duration_s=max_duration_s,
        checkpoint_interval_s=spec.checkpoint_interval_s,
        sim_utilization=spec.sim_utilization,
        state=WorkloadState.PENDING.value,
        reason="waiting for the scheduler",
        reason_code=PendingCode.SUBMITTED.value,
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


def _check_quota(session: Session, *, tenant_id: str, spec: WorkloadSpec, default_max_duration_s: int) -> None:
    """Reject at submission when the tenant's policy says so; "hold" tenants wait in the queue."""
    tenant = session.get(Tenant, tenant_id)
    if tenant is None or tenant.over_quota != OverQuotaPolicy.REJECT:
        return
    if tenant.max_gpus is None and tenant.gpu_hours_limit is None and tenant.spend_cap_usd is None:
        return
    now = utcnow()
    usage = quota.tenant_usage(session, tenant_id=tenant_id, now=now)
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
    reason = check_quota(usage.policy, request, usage.gpus_in_use)
    if reason is not None:
        raise OverQuota(f"rejected: {reason.text}")
