"""Operator routes: the fleet with live state, cordon/drain, tenants and their keys."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from sqlalchemy import func, select

from controlplane.api.convert import WorkloadQuery, gpu_out, key_out, node_out, workload_page
from controlplane.api.deps import OperatorPrincipal, RuntimeDep
from controlplane.api.schemas import (
    CordonRequest,
    GpuEventOut,
    GpuOut,
    KeyCreate,
    KeyOut,
    MiningEventOut,
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
from controlplane.domain.enums import KeyScope
from controlplane.domain.errors import NotFound
from controlplane.runtime import Runtime
from controlplane.services import admin, fleet, placement
from controlplane.services import snapshot as snapshots
from controlplane.store.models import ApiKey, Gpu, GpuEvent, MiningEvent, Node, Preemption, Rack, Site, Tenant

router = APIRouter(prefix="/operator", tags=["operator"])
Id = Annotated[str, Path(min_length=1, max_length=40)]


@router.get("/sites", response_model=list[SiteOut])
def list_sites(_: OperatorPrincipal, runtime: RuntimeDep) -> list[SiteOut]:
    with runtime.read() as session:
        counts = dict(session.execute(select(Rack.site_id, func.count()).group_by(Rack.site_id)).all())
        return [
            SiteOut(
                id=s.id,
                name=s.name,
                description=s.description,
                grid_capacity_mw=s.grid_capacity_mw,
                pue=s.pue,
                racks=counts.get(s.id, 0),
            )
            for s in fleet.list_sites(session)
        ]


@router.get("/racks", response_model=list[RackOut])
def list_racks(
    _: OperatorPrincipal, runtime: RuntimeDep, site_id: Annotated[str | None, Query(max_length=40)] = None
) -> list[RackOut]:
    with runtime.read() as session:
        registered = dict(session.execute(select(Node.rack_id, func.count()).group_by(Node.rack_id)).all())
        return [
            RackOut(
                id=r.id,
                site_id=r.site_id,
                name=r.name,
                model=r.model,
                nodes_expected=r.nodes_expected,
                nodes_registered=registered.get(r.id, 0),
                power_capacity_kw=r.power_capacity_kw,
                nvlink_domain=f"{r.fabric_cluster_uuid}.{r.fabric_clique_id}",
            )
            for r in fleet.list_racks(session, site_id)
        ]


def _nodes(runtime: Runtime, node_ids: list[str] | None, rack_id: str | None) -> list[NodeOut]:
    now = time.time()
    with runtime.read() as session:
        nodes = fleet.list_nodes(session, rack_id)
        if node_ids is not None:
            nodes = [n for n in nodes if n.id in node_ids]
        states = fleet.gpu_states(session)
    node_ids = [n.id for n in nodes]
    samples, energy = runtime.live.gpu_samples(node_ids), runtime.live.energy(node_ids)
    liveness = runtime.live.node_liveness(node_ids, now=now)
    by_node: dict[str, list[GpuOut]] = {}
    for st in states:
        by_node.setdefault(st.node.id, []).append(gpu_out(st, samples.get(st.gpu.uuid), energy.get(st.gpu.uuid)))
    return [
        node_out(
            n,
            by_node.get(n.id, []),
            lease_alive=liveness[n.id][0],
            reports=liveness[n.id][1],
        )
        for n in nodes
    ]


@router.get("/nodes", response_model=list[NodeOut])
def list_nodes(
    _: OperatorPrincipal, runtime: RuntimeDep, rack_id: Annotated[str | None, Query(max_length=40)] = None
) -> list[NodeOut]:
    return _nodes(runtime, None, rack_id)


@router.get("/nodes/{node_id}", response_model=NodeOut)
def get_node(node_id: Id, _: OperatorPrincipal, runtime: RuntimeDep) -> NodeOut:
    found = _nodes(runtime, [node_id], None)
    if not found:
        raise NotFound(f"no node {node_id!r}")
    return found[0]


@router.get("/gpus", response_model=list[GpuOut])
def list_gpus(
    _: OperatorPrincipal,
    runtime: RuntimeDep,
    state: Annotated[str | None, Query(max_length=16)] = None,
) -> list[GpuOut]:
    with runtime.read() as session:
        states = fleet.gpu_states(session)
    node_ids = sorted({st.node.id for st in states})
    samples, energy = runtime.live.gpu_samples(node_ids), runtime.live.energy(node_ids)
    return [
        gpu_out(st, samples.get(st.gpu.uuid), energy.get(st.gpu.uuid))
        for st in states
        if state is None or st.state == state
    ]


@router.get("/gpus/{gpu_id}/events", response_model=list[GpuEventOut])
def gpu_events(
    gpu_id: Id,
    _: OperatorPrincipal,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[GpuEventOut]:
    """XIDs, health changes, lost and found: newest first."""
    with runtime.read() as session:
        if session.get(Gpu, gpu_id) is None:
            raise NotFound(f"no GPU {gpu_id!r}")
        rows = session.scalars(
            select(GpuEvent).where(GpuEvent.gpu_id == gpu_id).order_by(GpuEvent.id.desc()).limit(limit)
        ).all()
        return [GpuEventOut(kind=e.kind, xid=e.xid, detail=e.detail, at=e.at) for e in rows]


@router.post("/nodes/{node_id}/cordon", response_model=NodeOut)
def cordon(node_id: Id, _: OperatorPrincipal, runtime: RuntimeDep, body: CordonRequest | None = None) -> NodeOut:
    with runtime.uow() as session:
        fleet.cordon(session, node_id=node_id, reason=(body or CordonRequest()).reason)
    return get_node(node_id, _, runtime)


@router.post("/nodes/{node_id}/drain", response_model=NodeOut)
def drain(node_id: Id, _: OperatorPrincipal, runtime: RuntimeDep, body: CordonRequest | None = None) -> NodeOut:
    reason = body.reason if body else "drained by an operator"
    with runtime.uow() as session:
        fleet.cordon(session, node_id=node_id, reason=reason, drain=True)
    return get_node(node_id, _, runtime)


@router.post("/nodes/{node_id}/uncordon", response_model=NodeOut)
def uncordon(node_id: Id, _: OperatorPrincipal, runtime: RuntimeDep) -> NodeOut:
    with runtime.uow() as session:
        fleet.uncordon(session, node_id=node_id)
    return get_node(node_id, _, runtime)


@router.get("/workloads", response_model=WorkloadPage)
def list_all_workloads(
    _: OperatorPrincipal, runtime: RuntimeDep, query: Annotated[WorkloadQuery, Depends()]
) -> WorkloadPage:
    with runtime.read() as session:
        return workload_page(session, tenant_id=None, query=query)


@router.get("/tenants", response_model=list[TenantOut])
def list_tenants(_: OperatorPrincipal, runtime: RuntimeDep) -> list[TenantOut]:
    with runtime.read() as session:
        rows = session.scalars(select(Tenant).order_by(Tenant.name)).all()
        return [tenant_out(t) for t in rows]


@router.post("/tenants", response_model=TenantOut, status_code=201)
def create_tenant(body: TenantCreate, _: OperatorPrincipal, runtime: RuntimeDep) -> TenantOut:
    with runtime.uow() as session:
        t = admin.create_tenant(session, name=body.name)
        return tenant_out(t)


@router.patch("/tenants/{tenant_id}", response_model=TenantOut)
def update_tenant_policy(tenant_id: Id, body: TenantPolicyIn, _: OperatorPrincipal, runtime: RuntimeDep) -> TenantOut:
    """Reservation and quotas; fields left out keep their value, null clears a limit."""
    with runtime.uow() as session:
        tenant = admin.update_tenant_policy(session, tenant_id=tenant_id, changes=body.model_dump(exclude_unset=True))
        return tenant_out(tenant)


@router.get("/preemptions", response_model=list[PreemptionOut])
def list_preemptions(
    _: OperatorPrincipal, runtime: RuntimeDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[PreemptionOut]:
    """Every preemption, newest first: victim, what it made room for, why, grace, when freed."""
    with runtime.read() as session:
        rows = session.scalars(select(Preemption).order_by(Preemption.id.desc()).limit(limit)).all()
        return [
            PreemptionOut(
                victim_id=p.victim_id,
                for_workload_id=p.for_workload_id,
                victim_priority=p.victim_priority,
                gpu_count=p.gpu_count,
                reason=p.reason,
                grace_s=p.grace_s,
                noticed_at=p.noticed_at,
                released_at=p.released_at,
            )
            for p in rows
        ]


@router.get("/sites/{site_id}/power", response_model=SitePowerOut)
def site_power(site_id: Id, _: OperatorPrincipal, runtime: RuntimeDep) -> SitePowerOut:
    """The site's planned draw: GPUs (at their power limit when allocated) and mining, vs the cap."""
    with runtime.read() as session:
        site = session.get(Site, site_id) or session.scalar(select(Site).where(Site.name == site_id))
        if site is None:
            raise NotFound(f"no site {site_id!r}")
        snap = snapshots.build_snapshot(session, site=site)
        allocated = sum(1 for n in snap.nodes for g in n.gpus if g.allocated)
        gpu_w = placement.planned_gpu_draw_w(snap, allocated)
        events = session.scalars(
            select(MiningEvent).where(MiningEvent.site_id == site.id).order_by(MiningEvent.id.desc()).limit(20)
        ).all()
        return SitePowerOut(
            site_id=site.id,
            cap_w=site.grid_capacity_mw * 1e6,
            pue=site.pue,
            gpu_planned_w=gpu_w,
            mining_planned_w=site.mining_planned_w,
            mining_fleet_w=admin.mining_fleet_w(site.spec),
            headroom_w=site.grid_capacity_mw * 1e6 - gpu_w - site.mining_planned_w,
            gpus_allocated=allocated,
            gpus_total=sum(len(n.gpus) for n in snap.nodes),
            recent_mining_events=[
                MiningEventOut(delta_w=e.delta_w, planned_w=e.planned_w, reason=e.reason, at=e.at) for e in events
            ],
        )


def tenant_out(t: Tenant) -> TenantOut:
    return TenantOut(
        id=t.id,
        name=t.name,
        created_at=t.created_at,
        reserved_gpus=t.reserved_gpus,
        max_gpus=t.max_gpus,
        gpu_hours_limit=t.gpu_hours_limit,
        spend_cap_usd=t.spend_cap_usd,
        over_quota=t.over_quota,
        price_usd_per_gpu_hour=t.price_usd_per_gpu_hour,
    )


@router.get("/tenants/{tenant_id}/keys", response_model=list[KeyOut])
def list_keys(tenant_id: Id, _: OperatorPrincipal, runtime: RuntimeDep) -> list[KeyOut]:
    with runtime.read() as session:
        tenant = admin.get_tenant(session, tenant_id)
        rows = session.scalars(select(ApiKey).where(ApiKey.tenant_id == tenant.id).order_by(ApiKey.id)).all()
        return [key_out(k) for k in rows]


@router.post("/tenants/{tenant_id}/keys", response_model=KeyOut, status_code=201)
def create_key(tenant_id: Id, _: OperatorPrincipal, runtime: RuntimeDep, body: KeyCreate | None = None) -> KeyOut:
    """The secret is in this response only; it is stored as an HMAC and cannot be shown again."""
    with runtime.uow() as session:
        tenant = admin.get_tenant(session, tenant_id)
        issued = admin.issue_api_key(
            session,
            pepper=runtime.pepper,
            scope=KeyScope.TENANT,
            name=(body or KeyCreate()).name,
            tenant_id=tenant.id,
        )
        return key_out(issued.key, issued.secret)


@router.post("/keys/{key_id}/revoke", response_model=KeyOut)
def revoke_key(key_id: Id, _: OperatorPrincipal, runtime: RuntimeDep) -> KeyOut:
    with runtime.uow() as session:
        out = key_out(admin.revoke_api_key(session, key_id=key_id))
    runtime.principals.forget_key(key_id)
    return out
