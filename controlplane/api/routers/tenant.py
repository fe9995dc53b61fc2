"""Tenant routes: workloads, their logs, what GPUs are on offer, the tenant's quota and metered
usage, its own API keys (list, rotate, revoke) and the audit entries about them.

Thin: parse, open the unit of work, call the service, convert. No SQL, no arithmetic.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi import Path as FastPath

from controlplane.api import convert
from controlplane.api.bodies import WORKLOAD_BODY_BYTES, GuardedRoute, body_limit
from controlplane.api.convert import WorkloadQuery
from controlplane.api.deps import IdempotencyKey, PathId, RuntimeDep, TenantPrincipal
from controlplane.api.origin import OriginDep, acting
from controlplane.api.schemas import (
    CancelRequest,
    OfferingOut,
    QuotaOut,
    UsageOut,
    WorkloadCreate,
    WorkloadOut,
    WorkloadPage,
)
from controlplane.api.schemas.credentials import ApiKeyOut, AuditPageOut, KeyPageOut, OwnKeyQuery, PageQuery
from controlplane.domain.enums import KeyScope, NvlinkPolicy, PriorityClass
from controlplane.domain.specs import WorkloadSpec
from controlplane.metering.invoice import invoice_csv, invoice_json
from controlplane.services import admin, audit
from controlplane.services.fleet import capacity
from controlplane.services.metering import invoices
from controlplane.services.metering import views as metering_views
from controlplane.services.workloads import cancel, quota, read, submit

router = APIRouter(tags=["tenant"], route_class=GuardedRoute)
WorkloadId = PathId
# A byte offset into one rank's log: far beyond any log, far inside both databases' integers.
MAX_LOG_OFFSET = 2**53


def _tenant_id(principal: TenantPrincipal) -> str:
    assert principal.tenant_id is not None
    return principal.tenant_id


@router.post("/workloads", status_code=201, response_model=WorkloadOut, openapi_extra=body_limit(WORKLOAD_BODY_BYTES))
def create_workload(
    body: WorkloadCreate,
    tenant: TenantPrincipal,
    runtime: RuntimeDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> WorkloadOut:
    """Submit a workload. Retrying with the same Idempotency-Key returns the original (200)."""
    spec = WorkloadSpec(
        gpu_count=body.gpus,
        gpu_model=body.gpu_model,
        nvlink=NvlinkPolicy(body.nvlink),
        priority=PriorityClass(body.priority),
        command=tuple(body.command),
        env=dict(body.env),
        max_duration_s=body.max_duration_s,
        checkpoint_interval_s=body.checkpoint_interval_s,
        name=body.name,
        sim_utilization=body.sim_utilization,
    )
    with runtime.uow() as session:
        result = submit.submit(
            session,
            tenant_id=_tenant_id(tenant),
            spec=spec,
            idempotency_key=idempotency_key,
            default_max_duration_s=runtime.settings.default_max_duration_s,
        )
        out = convert.workload_out(read.view(session, result.workload))
    if not result.created:
        response.status_code = 200
    response.headers["Location"] = f"/v1/workloads/{out.id}"
    return out


@router.get("/workloads", response_model=WorkloadPage)
def list_workloads(
    tenant: TenantPrincipal, runtime: RuntimeDep, query: Annotated[WorkloadQuery, Depends()]
) -> WorkloadPage:
    with runtime.read() as session:
        page = read.page(
            session, tenant_id=_tenant_id(tenant), state=query.state, limit=query.limit, cursor=query.cursor
        )
        return convert.workload_page(page)


@router.get("/workloads/{workload_id}", response_model=WorkloadOut)
def get_workload(workload_id: WorkloadId, tenant: TenantPrincipal, runtime: RuntimeDep) -> WorkloadOut:
    with runtime.read() as session:
        wl = read.get(session, tenant_id=_tenant_id(tenant), workload_id=workload_id)
        return convert.workload_out(read.view(session, wl, history=True))


@router.post("/workloads/{workload_id}/cancel", response_model=WorkloadOut)
def cancel_workload(
    workload_id: WorkloadId,
    tenant: TenantPrincipal,
    runtime: RuntimeDep,
    body: CancelRequest | None = None,
) -> WorkloadOut:
    reason = (body or CancelRequest()).reason
    with runtime.uow() as session:
        wl = cancel.cancel(session, tenant_id=_tenant_id(tenant), workload_id=workload_id, reason=reason)
        return convert.workload_out(read.view(session, wl))


@router.get("/workloads/{workload_id}/logs", response_class=Response)
def read_logs(
    workload_id: WorkloadId,
    tenant: TenantPrincipal,
    runtime: RuntimeDep,
    rank: Annotated[int, Query(ge=0, le=100_000)] = 0,
    offset: Annotated[int, Query(ge=0, le=MAX_LOG_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=4 * 1024 * 1024)] = 1024 * 1024,
) -> Response:
    """A rank's combined stdout+stderr from ``offset``; ``X-Next-Offset`` says where to go on."""
    with runtime.read() as session:
        piece = read.read_log(
            session,
            tenant_id=_tenant_id(tenant),
            workload_id=workload_id,
            rank=rank,
            offset=offset,
            limit=limit,
        )
    return Response(
        content=piece.data,
        media_type="text/plain; charset=utf-8",
        headers={"X-Next-Offset": str(piece.next_offset), "X-Log-Complete": str(piece.complete).lower()},
    )


@router.get("/offerings", response_model=list[OfferingOut])
def list_offerings(tenant: TenantPrincipal, runtime: RuntimeDep) -> list[OfferingOut]:
    with runtime.read() as session:
        return [convert.offering_out(o) for o in capacity.offerings(session)]


@router.get("/quota", response_model=QuotaOut)
def my_quota(tenant: TenantPrincipal, runtime: RuntimeDep) -> QuotaOut:
    """Your reservation, limits, and what you have used of them this month."""
    with runtime.read() as session:
        return convert.quota_out(quota.quota_view(session, tenant_id=_tenant_id(tenant)))


@router.get("/usage", response_model=UsageOut)
def my_usage(
    tenant: TenantPrincipal,
    runtime: RuntimeDep,
    start: Annotated[date, Query(alias="from", description="first UTC day (YYYY-MM-DD), included")],
    end: Annotated[date, Query(alias="to", description="UTC day after the last (YYYY-MM-DD)")],
    by: Annotated[Literal["workload", "day"], Query()] = "day",
) -> UsageOut:
    """Your metered usage from the usage ledger: GPU-hours, kWh and dollars, by workload or day."""
    with runtime.read() as session:
        view = metering_views.usage_view(session, tenant_id=_tenant_id(tenant), start=start, end=end, by=by)
        return convert.usage_out(view)


@router.get("/invoices/{month}", response_class=Response)
def my_invoice(
    tenant: TenantPrincipal,
    runtime: RuntimeDep,
    month: Annotated[str, FastPath(pattern=r"^[0-9]{4}-[0-9]{2}$", description="YYYY-MM (UTC)")],
    fmt: Annotated[Literal["json", "csv"], Query(alias="format")] = "json",
) -> Response:
    """Your invoice for a calendar month, from the usage ledger: JSON or CSV, the same bytes every
    time from the same ledger; "status" is "final" once the month and an hour's grace are over."""
    with runtime.read() as session:
        invoice = invoices.monthly_invoice(session, tenant_id=_tenant_id(tenant), month=month, now=datetime.now(UTC))
    if fmt == "csv":
        return Response(invoice_csv(invoice), media_type="text/csv; charset=utf-8")
    return Response(invoice_json(invoice), media_type="application/json")


@router.get("/keys", response_model=KeyPageOut)
def my_keys(tenant: TenantPrincipal, runtime: RuntimeDep, query: Annotated[OwnKeyQuery, Depends()]) -> KeyPageOut:
    """Your API keys, newest first (never their secrets)."""
    where = admin.KeyFilter(scope=KeyScope.TENANT, tenant_id=_tenant_id(tenant), active=query.active)
    with runtime.read() as session:
        return convert.key_page(admin.list_api_keys(session, where=where, limit=query.limit, cursor=query.cursor))


@router.post("/keys/{key_id}/rotate", response_model=ApiKeyOut, status_code=201)
def rotate_my_key(key_id: PathId, tenant: TenantPrincipal, origin: OriginDep, runtime: RuntimeDep) -> ApiKeyOut:
    """A new secret for one of your keys, in this response only; the old one stops working now."""
    with runtime.uow() as session:
        issued = admin.rotate_api_key(
            session, pepper=runtime.pepper, key_id=key_id, tenant_id=_tenant_id(tenant), audit=acting(tenant, origin)
        )
        out = convert.api_key_out(issued.key, issued.secret)
    runtime.principals.forget_key(key_id)
    return out


@router.post("/keys/{key_id}/revoke", response_model=ApiKeyOut)
def revoke_my_key(key_id: PathId, tenant: TenantPrincipal, origin: OriginDep, runtime: RuntimeDep) -> ApiKeyOut:
    with runtime.uow() as session:
        key = admin.revoke_api_key(session, key_id=key_id, tenant_id=_tenant_id(tenant), audit=acting(tenant, origin))
        out = convert.api_key_out(key)
    runtime.principals.forget_key(key_id)
    return out


@router.get("/audit", response_model=AuditPageOut)
def my_audit(tenant: TenantPrincipal, runtime: RuntimeDep, query: Annotated[PageQuery, Depends()]) -> AuditPageOut:
    """What happened to your keys: created, used from a new address, revoked, rotated; newest first."""
    with runtime.read() as session:
        page = audit.tenant_page(session, tenant_id=_tenant_id(tenant), limit=query.limit, cursor=query.cursor)
        return convert.audit_page(page)
