"""Build the scheduling core's input from the database: one site's fleet, its running work (with
its run bound, its preemption history and the claims on GPUs it is freeing), its power, the
tenants' reservations, quotas and share weights, the site's planning rules, and the queue with
each request's planned start. Reads only, one statement per kind of row (never one per workload)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.domain.enums import (
    NODE_ACTIONS,
    GpuHealth,
    HealthAction,
    NodeStatus,
    NvlinkPolicy,
    OverQuotaPolicy,
    PriorityClass,
    WorkloadState,
)
from controlplane.domain.money import gpu_time_cost
from controlplane.metering.usage import gpu_seconds_by_tenant, month_start
from controlplane.power.model import PowerModel
from controlplane.scheduling.snapshot import (
    FleetSnapshot,
    GpuSlot,
    MiningBlock,
    NodeView,
    PlannedStart,
    PlanningRules,
    RunningWorkload,
    TenantPolicy,
    WorkloadRequest,
)
from controlplane.services.admin.sites import site_spec
from controlplane.store.bulk import among
from controlplane.store.models import Allocation, Gpu, Node, Preemption, Rack, Site, Tenant, Workload
from controlplane.store.models.workloads import decode_domains

# How far back a workload's preemption notices count towards the notices-per-hour cap.
NOTICE_WINDOW = timedelta(hours=1)


def build_snapshot(
    session: Session,
    *,
    site: Site | None = None,
    now: datetime | None = None,
    stop_grace_s: float = 30.0,
    rules: PlanningRules | None = None,
) -> FleetSnapshot:
    now = now or datetime.now(UTC)
    # Plain column tuples, not ORM objects: a campus has 30,000 nodes and 120,000 GPUs.
    node_query = select(Node.id, Node.nvlink_domain, Node.status, Node.draining, Node.cordoned, Node.rack_id).order_by(
        Node.id
    )
    if site is not None:
        node_query = node_query.where(Node.site_id == site.id)
    all_nodes = session.execute(node_query).all()
    node_ids = {n.id for n in all_nodes}
    live_query = select(Allocation).where(Allocation.released_at.is_(None))
    if site is not None:
        live_query = live_query.join(Node, Node.id == Allocation.node_id).where(Node.site_id == site.id)
    live = session.scalars(live_query).all()
    allocated = {a.gpu_id for a in live}
    gpus_by_node: dict[str, list[GpuSlot]] = defaultdict(list)
    node_actions: dict[str, str] = {}
    peer_drain_nodes: set[str] = set()
    models: dict[str, str] = {}
    gpu_query = select(Gpu.id, Gpu.node_id, Gpu.index, Gpu.model, Gpu.health, Gpu.health_action).where(Gpu.present)
    if site is not None:
        gpu_query = gpu_query.join(Node, Node.id == Gpu.node_id).where(Node.site_id == site.id)
    for gpu_id, node_id, index, model, health, action in session.execute(gpu_query):
        if node_id not in node_ids:
            continue
        models[gpu_id] = model
        gpus_by_node[node_id].append(
            # Degraded GPUs still run work (the tenant is told); unhealthy ones admit none.
            GpuSlot(
                gpu_id=gpu_id,
                index=index,
                model=model,
                healthy=health != GpuHealth.UNHEALTHY,
                allocated=gpu_id in allocated,
            )
        )
        if action in NODE_ACTIONS:
            node_actions[node_id] = action
        if action == HealthAction.DRAIN_NVLINK_PEERS:
            peer_drain_nodes.add(node_id)
    draining_domains = {n.nvlink_domain for n in all_nodes if n.id in peer_drain_nodes and n.nvlink_domain}
    nodes = tuple(
        NodeView(
            node_id=n.id,
            domain=n.nvlink_domain,
            unschedulable=_unschedulable(n.status, n.draining, n.cordoned, node_actions.get(n.id)),
            gpus=tuple(gpus_by_node.get(n.id, ())),
            nvlink_draining=n.id in peer_drain_nodes or n.nvlink_domain in draining_domains,
            rack_id=n.rack_id,
        )
        for n in all_nodes
    )
    tenants = session.scalars(select(Tenant)).all()
    prices = {t.id: t.price_usd_per_gpu_hour for t in tenants}
    return FleetSnapshot(
        nodes=nodes,
        running=running_workloads(session, live, models, now=now, prices=prices),
        tenants=tenant_policies(session, now, tenants),
        power=power_model(session, site) if site is not None else None,
        mining=MiningBlock(power_w=site.mining_planned_w) if site is not None else None,
        now=now.timestamp(),
        stop_grace_s=stop_grace_s,
        rules=rules or PlanningRules(),
    )


def _unschedulable(status: str, draining: bool, cordoned: bool, gpu_action: str | None) -> str:
    if status != NodeStatus.READY.value:
        return status
    if gpu_action is not None:
        return gpu_action.replace("_", " ")  # "reboot node": a GPU's health asks for it
    if draining:
        return "draining"
    if cordoned:
        return "cordoned"
    return ""


def running_workloads(
    session: Session,
    live: Sequence[Allocation],
    models: dict[str, str],
    *,
    now: datetime | None = None,
    prices: dict[str, Decimal] | None = None,
) -> tuple[RunningWorkload, ...]:
    """Work holding GPUs. Allocations already dropped from the desired state (cancelled, preempted,
    finished, being stopped) count as freeing soon: never victims, and never counted twice.

    Each carries when it must have ended (its start plus its max duration), its preemption
    history (how often, and its notices of the last hour) and, while it frees its GPUs under a
    notice, the preemptor they are claimed for."""
    by_workload: dict[str, list[Allocation]] = defaultdict(list)
    for alloc in live:
        by_workload[alloc.workload_id].append(alloc)
    if not by_workload:
        return ()
    now = now or datetime.now(UTC)
    prices = prices or {}
    ids = list(by_workload)
    rows = [wl for chosen in among(session, Workload.id, ids) for wl in session.scalars(select(Workload).where(chosen))]
    history = preemption_history(session, ids, since=now - NOTICE_WINDOW)
    out = []
    for wl in rows:
        allocs = by_workload[wl.id]
        started = wl.scheduled_at or wl.created_at
        preempting = any(a.stop_generation is not None for a in allocs)
        past = history.get(wl.id, _NO_HISTORY)
        out.append(
            RunningWorkload(
                workload_id=wl.id,
                tenant_id=wl.tenant_id,
                priority=PriorityClass(wl.priority),
                gpus=tuple((a.node_id, a.gpu_id) for a in allocs),
                started_at=started.timestamp(),
                gpu_model=models.get(allocs[0].gpu_id, wl.gpu_model),
                preempting=preempting,
                claimed_for=past.claimed_for if preempting else "",
                ends_by=(
                    (wl.scheduled_at + timedelta(seconds=wl.max_duration_s)).timestamp()
                    if wl.scheduled_at is not None
                    else None
                ),
                preemptions=past.count,
                noticed_at=tuple(sorted(past.noticed_at)),
                checkpoint_interval_s=(
                    float(wl.checkpoint_interval_s) if wl.checkpoint_interval_s is not None else None
                ),
                price_usd_per_gpu_hour=prices.get(wl.tenant_id, Decimal(0)),
            )
        )
    return tuple(sorted(out, key=lambda r: r.workload_id))


@dataclass(slots=True)
class PreemptionHistory:
    """One workload's preemptions: how many, the times of its notices since the window opened,
    and the preemptor its GPUs are claimed for while an unreleased notice frees them."""

    count: int = 0
    noticed_at: list[float] = field(default_factory=list)
    claimed_for: str = ""
    claimed_at: datetime | None = None


_NO_HISTORY = PreemptionHistory()


def preemption_history(session: Session, workload_ids: list[str], *, since: datetime) -> dict[str, PreemptionHistory]:
    """The preemption records of these workloads, folded per workload (one statement)."""
    out: dict[str, PreemptionHistory] = {}
    for chosen in among(session, Preemption.victim_id, workload_ids):
        query = select(
            Preemption.victim_id, Preemption.for_workload_id, Preemption.noticed_at, Preemption.released_at
        ).where(chosen)
        for victim_id, for_id, noticed_at, released_at in session.execute(query):
            h = out.setdefault(victim_id, PreemptionHistory())
            h.count += 1
            if noticed_at >= since:
                h.noticed_at.append(noticed_at.timestamp())
            if released_at is None and (h.claimed_at is None or noticed_at >= h.claimed_at):
                h.claimed_for, h.claimed_at = for_id, noticed_at
    return out


def tenant_policies(
    session: Session, now: datetime, tenants: Sequence[Tenant] | None = None
) -> dict[str, TenantPolicy]:
    used = gpu_seconds_this_month(session, now)
    if tenants is None:
        tenants = session.scalars(select(Tenant)).all()
    return {t.id: tenant_policy(t, used.get(t.id, Decimal(0))) for t in tenants}


def tenant_policy(tenant: Tenant, gpu_seconds_used: Decimal) -> TenantPolicy:
    """The core's view of a tenant's contract and what it used of it this month."""
    return TenantPolicy(
        tenant_id=tenant.id,
        reserved_gpus=tenant.reserved_gpus,
        max_gpus=tenant.max_gpus,
        gpu_hours_limit=tenant.gpu_hours_limit,
        gpu_hours_used=float(gpu_seconds_used / 3600),
        spend_cap_usd=tenant.spend_cap_usd,
        spend_used_usd=gpu_time_cost(gpu_seconds_used, tenant.price_usd_per_gpu_hour),
        over_quota=OverQuotaPolicy(tenant.over_quota),
        share_weight=tenant.share_weight,
    )


def gpu_seconds_this_month(session: Session, now: datetime, tenant_id: str | None = None) -> dict[str, Decimal]:
    """GPU-seconds each tenant held this calendar month, from allocation lifetimes (the ledger of
    issue 11 prices the same intervals with energy)."""
    start = month_start(now)
    query = (
        select(Workload.tenant_id, Allocation.created_at, Allocation.released_at)
        .join(Workload, Workload.id == Allocation.workload_id)
        .where((Allocation.released_at.is_(None)) | (Allocation.released_at >= start))
    )
    if tenant_id is not None:
        query = query.where(Workload.tenant_id == tenant_id)
    return gpu_seconds_by_tenant(((t, c, r) for t, c, r in session.execute(query)), start=start, end=now)


def power_model(session: Session, site: Site) -> PowerModel:
    racks = session.execute(select(Rack.id, Rack.power_capacity_kw).where(Rack.site_id == site.id)).all()
    return PowerModel.for_site(site_spec(site), {rack_id: kw * 1000 for rack_id, kw in racks})


def pending_queue(session: Session) -> list[WorkloadRequest]:
    rows = session.execute(
        select(Workload, Tenant.price_usd_per_gpu_hour)
        .join(Tenant, Tenant.id == Workload.tenant_id)
        .where(Workload.state == WorkloadState.PENDING.value)
    ).all()
    return [
        WorkloadRequest(
            workload_id=w.id,
            gpu_count=w.gpu_count,
            gpu_model=w.gpu_model,
            nvlink=NvlinkPolicy(w.nvlink),
            priority=PriorityClass(w.priority),
            submitted_at=w.created_at.timestamp(),
            tenant_id=w.tenant_id,
            max_duration_s=float(w.max_duration_s),
            price_usd_per_gpu_hour=price,
            plan=planned_start(w),
        )
        for w, price in rows
    ]


def planned_start(w: Workload) -> PlannedStart | None:
    """The plan an earlier pass committed for this pending workload, or None."""
    if w.expected_start_at is None:
        return None
    first = w.first_expected_start_at
    return PlannedStart(
        start_at=w.expected_start_at.timestamp(),
        domains=decode_domains(w.planned_domains),
        first_start_at=first.timestamp() if first is not None else None,
        planned_at=w.planned_at.timestamp() if w.planned_at is not None else None,
    )
