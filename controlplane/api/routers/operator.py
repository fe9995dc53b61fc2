"""Operator routes: the fleet with live state, cordon/drain, tenants and their keys, every
credential (list, revoke, rotate), the audit log, preemptions, the site's power.

Every change an operator makes is recorded in the audit log in the same unit of work.

Thin: parse, open the unit of work, call the service, convert. No SQL, no arithmetic.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from controlplane.api import convert
from controlplane.api.bodies import GuardedRoute
from controlplane.api.convert import WorkloadQuery
from controlplane.api.deps import OperatorPrincipal, PathId, QueryId, RuntimeDep
from controlplane.api.origin import OriginDep, acting
from controlplane.api.schemas import (
    CordonRequest,
    GpuEventOut,
    GpuOut,
    KeyCreate,
    KeyOut,
    NodeOut,
    PreemptionOut,
    RackOut,
    SiteOut,
    SitePowerOut,
    TenantCreate,
    TenantOut,
    TenantPolicyIn,
    WorkloadPage,
)
from controlplane.api.schemas.credentials import (
    ApiKeyOut,
    AuditPageOut,
    AuditQuery,
    BootstrapTokenOut,
    BootstrapTokenPageOut,
    KeyPageOut,
    KeyQuery,
    TokenQuery,
)
from controlplane.domain import audit as actions
from controlplane.domain.enums import KeyScope
from controlplane.domain.gpu import GpuState
from controlplane.services import admin, audit
from controlplane.services.fleet import cordon as cordons
from controlplane.services.fleet import power, views
from controlplane.services.workloads import read

router = APIRouter(prefix="/operator", tags=["operator"], route_class=GuardedRoute)
Id = PathId


@router.get("/sites", response_model=list[SiteOut])
def list_sites(_: OperatorPrincipal, runtime: RuntimeDep) -> list[SiteOut]:
    with runtime.read() as session:
        return [convert.site_out(v) for v in views.sites(session)]


@router.get("/racks", response_model=list[RackOut])
def list_racks(_: OperatorPrincipal, runtime: RuntimeDep, site_id: QueryId = None) -> list[RackOut]:
    with runtime.read() as session:
        return [convert.rack_out(v) for v in views.racks(session, site_id)]


@router.get("/nodes", response_model=list[NodeOut])
def list_nodes(_: OperatorPrincipal, runtime: RuntimeDep, rack_id: QueryId = None) -> list[NodeOut]:
    return [convert.node_out(n) for n in views.nodes(runtime.read, runtime.live, rack_id=rack_id)]


@router.get("/nodes/{node_id}", response_model=NodeOut)
def get_node(node_id: Id, _: OperatorPrincipal, runtime: RuntimeDep) -> NodeOut:
    return convert.node_out(views.node(runtime.read, runtime.live, node_id))


@router.get("/gpus", response_model=list[GpuOut])
def list_gpus(_: OperatorPrincipal, runtime: RuntimeDep, state: GpuState | None = None) -> list[GpuOut]:
    return [convert.gpu_out(g) for g in views.gpus(runtime.read, runtime.live, state=state)]


@router.get("/gpus/{gpu_id}/events", response_model=list[GpuEventOut])
def gpu_events(
    gpu_id: Id,
    _: OperatorPrincipal,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[GpuEventOut]:
    """XIDs, health changes, lost and found: newest first."""
    with runtime.read() as session:
        return [convert.gpu_event_out(e) for e in views.gpu_events(session, gpu_id=gpu_id, limit=limit)]


@router.post("/nodes/{node_id}/cordon", response_model=NodeOut)
def cordon(
    node_id: Id, op: OperatorPrincipal, origin: OriginDep, runtime: RuntimeDep, body: CordonRequest | None = None
) -> NodeOut:
    reason = (body or CordonRequest()).reason
    with runtime.uow() as session:
        cordons.cordon(session, acting(op, origin), node_id=node_id, reason=reason)
    return get_node(node_id, op, runtime)


@router.post("/nodes/{node_id}/drain", response_model=NodeOut)
def drain(
    node_id: Id, op: OperatorPrincipal, origin: OriginDep, runtime: RuntimeDep, body: CordonRequest | None = None
) -> NodeOut:
    reason = body.reason if body else "drained by an operator"
    with runtime.uow() as session:
        cordons.cordon(session, acting(op, origin), node_id=node_id, reason=reason, drain=True)
    return get_node(node_id, op, runtime)


@router.post("/nodes/{node_id}/uncordon", response_model=NodeOut)
def uncordon(node_id: Id, op: OperatorPrincipal, origin: OriginDep, runtime: RuntimeDep) -> NodeOut:
    with runtime.uow() as session:
        cordons.uncordon(session, acting(op, origin), node_id=node_id)
    return get_node(node_id, op, runtime)


@router.get("/workloads", response_model=WorkloadPage)
def list_all_workloads(
    _: OperatorPrincipal, runtime: RuntimeDep, query: Annotated[WorkloadQuery, Depends()]
) -> WorkloadPage:
    with runtime.read() as session:
        page = read.page(session, tenant_id=None, state=query.state, limit=query.limit, cursor=query.cursor)
        return convert.workload_page(page)


@router.get("/tenants", response_model=list[TenantOut])
def list_tenants(_: OperatorPrincipal, runtime: RuntimeDep) -> list[TenantOut]:
    with runtime.read() as session:
        return [convert.tenant_out(t) for t in views.tenants(session)]


@router.post("/tenants", response_model=TenantOut, status_code=201)
def create_tenant(body: TenantCreate, op: OperatorPrincipal, origin: OriginDep, runtime: RuntimeDep) -> TenantOut:
    with runtime.uow() as session:
        tenant = admin.create_tenant(session, name=body.name)
        audit.record(
            session,
            acting(op, origin),
            action=actions.TENANT_CREATED,
            target_kind="tenant",
            target_id=tenant.id,
            tenant_id=tenant.id,
            detail={"name": tenant.name},
        )
        return convert.tenant_out(tenant)


@router.patch("/tenants/{tenant_id}", response_model=TenantOut)
def update_tenant_policy(
    tenant_id: Id, body: TenantPolicyIn, op: OperatorPrincipal, origin: OriginDep, runtime: RuntimeDep
) -> TenantOut:
    """Reservation and quotas; fields left out keep their value, null clears a limit."""
    changes = body.model_dump(exclude_unset=True)
    with runtime.uow() as session:
        tenant = admin.update_tenant_policy(session, tenant_id=tenant_id, changes=changes)
        audit.record(
            session,
            acting(op, origin),
            action=actions.TENANT_POLICY_CHANGED,
            target_kind="tenant",
            target_id=tenant.id,
            tenant_id=tenant.id,
            detail={"changes": changes},
        )
        return convert.tenant_out(tenant)


@router.get("/preemptions", response_model=list[PreemptionOut])
def list_preemptions(
    _: OperatorPrincipal, runtime: RuntimeDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[PreemptionOut]:
    """Every preemption, newest first: victim, what it made room for, why, grace, when freed."""
    with runtime.read() as session:
        return [convert.preemption_out(p) for p in views.preemptions(session, limit=limit)]


@router.get("/sites/{site_id}/power", response_model=SitePowerOut)
def site_power(site_id: Id, _: OperatorPrincipal, runtime: RuntimeDep) -> SitePowerOut:
    """The site's planned draw: GPUs (at their power limit when allocated) and mining, vs the cap."""
    with runtime.read() as session:
        return convert.site_power_out(power.site_power(session, site=site_id))


@router.get("/tenants/{tenant_id}/keys", response_model=list[KeyOut])
def list_keys(tenant_id: Id, _: OperatorPrincipal, runtime: RuntimeDep) -> list[KeyOut]:
    with runtime.read() as session:
        tenant = admin.get_tenant(session, tenant_id)
        return [convert.key_out(k) for k in views.tenant_keys(session, tenant_id=tenant.id)]


@router.post("/tenants/{tenant_id}/keys", response_model=KeyOut, status_code=201)
def create_key(
    tenant_id: Id, op: OperatorPrincipal, origin: OriginDep, runtime: RuntimeDep, body: KeyCreate | None = None
) -> KeyOut:
    """The secret is in this response only; it is stored as an HMAC and cannot be shown again."""
    with runtime.uow() as session:
        tenant = admin.get_tenant(session, tenant_id)
        issued = admin.issue_api_key(
            session,
            pepper=runtime.pepper,
            scope=KeyScope.TENANT,
            name=(body or KeyCreate()).name,
            tenant_id=tenant.id,
            audit=acting(op, origin),
        )
        return convert.key_out(issued.key, issued.secret)


@router.get("/keys", response_model=KeyPageOut)
def list_all_keys(_: OperatorPrincipal, runtime: RuntimeDep, query: Annotated[KeyQuery, Depends()]) -> KeyPageOut:
    """Every API key: tenant, operator and agent (node) credentials, newest first, never a secret."""
    where = admin.KeyFilter(scope=query.scope, tenant_id=query.tenant_id, node_id=query.node_id, active=query.active)
    with runtime.read() as session:
        return convert.key_page(admin.list_api_keys(session, where=where, limit=query.limit, cursor=query.cursor))


@router.post("/keys/{key_id}/revoke", response_model=KeyOut)
def revoke_key(key_id: Id, op: OperatorPrincipal, origin: OriginDep, runtime: RuntimeDep) -> KeyOut:
    """Any key: a revoked node credential stops its agent's reports and desired-state polls."""
    with runtime.uow() as session:
        out = convert.key_out(admin.revoke_api_key(session, key_id=key_id, audit=acting(op, origin)))
    runtime.principals.forget_key(key_id)
    return out


@router.post("/keys/{key_id}/rotate", response_model=ApiKeyOut, status_code=201)
def rotate_key(key_id: Id, op: OperatorPrincipal, origin: OriginDep, runtime: RuntimeDep) -> ApiKeyOut:
    """A successor with the same scope, owner and name; its secret is in this response only. The
    old secret stops working at once (no overlap)."""
    with runtime.uow() as session:
        issued = admin.rotate_api_key(session, pepper=runtime.pepper, key_id=key_id, audit=acting(op, origin))
        out = convert.api_key_out(issued.key, issued.secret)
    runtime.principals.forget_key(key_id)
    return out


@router.get("/bootstrap-tokens", response_model=BootstrapTokenPageOut)
def list_bootstrap_tokens(
    _: OperatorPrincipal, runtime: RuntimeDep, query: Annotated[TokenQuery, Depends()]
) -> BootstrapTokenPageOut:
    """Agents' join tokens, newest first, with their status (active, expired, used, revoked)."""
    with runtime.read() as session:
        page = admin.list_bootstrap_tokens(
            session, site_id=query.site_id, unused=query.unused, limit=query.limit, cursor=query.cursor
        )
        return convert.token_page(page)


@router.post("/bootstrap-tokens/{token_id}/revoke", response_model=BootstrapTokenOut)
def revoke_bootstrap_token(
    token_id: Id, op: OperatorPrincipal, origin: OriginDep, runtime: RuntimeDep
) -> BootstrapTokenOut:
    with runtime.uow() as session:
        return convert.token_out(admin.revoke_bootstrap_token(session, token_id=token_id, audit=acting(op, origin)))


@router.post("/bootstrap-tokens/{token_id}/rotate", response_model=BootstrapTokenOut, status_code=201)
def rotate_bootstrap_token(
    token_id: Id, op: OperatorPrincipal, origin: OriginDep, runtime: RuntimeDep
) -> BootstrapTokenOut:
    """A fresh token for the same site and rack, with the same lifetime; the old one is revoked."""
    with runtime.uow() as session:
        row, secret = admin.rotate_bootstrap_token(
            session, pepper=runtime.pepper, token_id=token_id, audit=acting(op, origin)
        )
        return convert.token_out(row, secret)


@router.get("/audit", response_model=AuditPageOut)
def audit_log(_: OperatorPrincipal, runtime: RuntimeDep, query: Annotated[AuditQuery, Depends()]) -> AuditPageOut:
    """Operator actions, credential events and tenant policy changes: newest first, one page per call."""
    where = audit.AuditFilter(
        actor_id=query.actor,
        action=query.action,
        tenant_id=query.tenant_id,
        target_id=query.target_id,
        since=query.since,
        until=query.until,
    )
    with runtime.read() as session:
        return convert.audit_page(audit.page(session, where=where, limit=query.limit, cursor=query.cursor))
