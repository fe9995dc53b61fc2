"""The fleet as operators and tenants see it: capacity, live GPU state, cordon and drain."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controlplane.domain.enums import NodeStatus
from controlplane.domain.errors import NotFound
from controlplane.services.snapshot import gpu_hours_since
from controlplane.services.uow import wakeups
from controlplane.store.models import Allocation, Gpu, Node, Rack, Site, Tenant, Workload
from controlplane.store.types import utcnow


def capacity_by_model(session: Session) -> dict[str, int]:
    """GPUs a workload may ask for: the larger of what sites declare and what agents registered."""
    declared: Counter[str] = Counter()
    for site in session.scalars(select(Site)).all():
        racks = site.spec.get("racks", {})
        model = racks.get("gpu_model")
        if model:
            declared[model] += (
                int(racks.get("count", 0)) * int(racks.get("nodes_per_rack", 0)) * int(racks.get("gpus_per_node", 0))
            )
    registered = Counter(
        dict(session.execute(select(Gpu.model, func.count()).where(Gpu.present).group_by(Gpu.model)).all())
    )
    return {model: max(declared[model], registered[model]) for model in set(declared) | set(registered)}


@dataclass(frozen=True)
class GpuState:
    gpu: Gpu
    node: Node
    state: str  # free | allocated | releasing | cordoned | faulty | unreachable | lost
    workload_id: str | None


def gpu_states(session: Session, *, node_id: str | None = None) -> list[GpuState]:
    query = select(Gpu, Node).join(Node, Gpu.node_id == Node.id).order_by(Node.hostname, Gpu.index)
    if node_id is not None:
        query = query.where(Node.id == node_id)
    live = {a.gpu_id: a for a in session.scalars(select(Allocation).where(Allocation.released_at.is_(None))).all()}
    out = []
    for gpu, node in session.execute(query).all():
        alloc = live.get(gpu.id)
        out.append(GpuState(gpu, node, _state(gpu, node, alloc), alloc.workload_id if alloc else None))
    return out


def _state(gpu: Gpu, node: Node, alloc: Allocation | None) -> str:
    if not gpu.present:
        return "lost"
    if alloc is not None:
        return "releasing" if alloc.stop_generation is not None else "allocated"
    if node.status != NodeStatus.READY.value:
        return "unreachable"
    if gpu.health == "unhealthy":
        return "faulty"
    if node.cordoned:
        return "cordoned"
    return "free"


@dataclass(frozen=True)
class Offering:
    gpu_model: str
    total: int
    available: int
    # Largest gang that fits right now on one node and inside one NVLink domain.
    largest_node_block: int
    largest_nvlink_block: int
    memory_mib: int


def offerings(session: Session) -> list[Offering]:
    capacity = capacity_by_model(session)
    free_by_node: dict[str, Counter[str]] = defaultdict(Counter)
    free_by_domain: dict[str, Counter[str]] = defaultdict(Counter)
    memory: dict[str, int] = {}
    for st in gpu_states(session):
        memory[st.gpu.model] = st.gpu.memory_total_mib
        if st.state == "free":
            free_by_node[st.gpu.model][st.node.id] += 1
            if st.node.nvlink_domain:
                free_by_domain[st.gpu.model][st.node.nvlink_domain] += 1
    return [
        Offering(
            gpu_model=model,
            total=total,
            available=sum(free_by_node[model].values()),
            largest_node_block=max(free_by_node[model].values(), default=0),
            largest_nvlink_block=max(free_by_domain[model].values(), default=0),
            memory_mib=memory.get(model, 0),
        )
        for model, total in sorted(capacity.items())
    ]


def get_node(session: Session, node_id: str) -> Node:
    node = session.get(Node, node_id)
    if node is None:
        raise NotFound(f"no node {node_id!r}")
    return node


def cordon(session: Session, *, node_id: str, reason: str, drain: bool = False) -> Node:
    """Cordon: admit no new work. Drain: the same, and say the node is being emptied on purpose.

    Neither moves running work; the operator (or a later policy) decides what to do with it.
    """
    node = get_node(session, node_id)
    node.cordoned = True
    node.draining = drain or node.draining
    node.cordon_reason = reason
    node.status_changed_at = utcnow()
    return node


def uncordon(session: Session, *, node_id: str) -> Node:
    node = get_node(session, node_id)
    node.cordoned = False
    node.draining = False
    node.cordon_reason = ""
    node.status_changed_at = utcnow()
    wakeups(session).scheduler = True
    return node


def list_sites(session: Session) -> list[Site]:
    return list(session.scalars(select(Site).order_by(Site.name)).all())


def list_racks(session: Session, site_id: str | None = None) -> list[Rack]:
    query = select(Rack).order_by(Rack.name)
    if site_id is not None:
        query = query.where(Rack.site_id == site_id)
    return list(session.scalars(query).all())


def list_nodes(session: Session, rack_id: str | None = None) -> list[Node]:
    query = select(Node).order_by(Node.hostname)
    if rack_id is not None:
        query = query.where(Node.rack_id == rack_id)
    return list(session.scalars(query).all())


def quota_view(session: Session, *, tenant_id: str) -> dict[str, Any]:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound(f"no tenant {tenant_id!r}")
    now = utcnow()
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    hours = gpu_hours_since(session, month_start, now).get(tenant_id, 0.0)
    in_use = session.scalar(
        select(func.count())
        .select_from(Allocation)
        .join(Workload, Workload.id == Allocation.workload_id)
        .where(Workload.tenant_id == tenant_id, Allocation.released_at.is_(None))
    )
    return {
        "reserved_gpus": tenant.reserved_gpus,
        "max_gpus": tenant.max_gpus,
        "gpu_hours_limit": tenant.gpu_hours_limit,
        "spend_cap_usd": tenant.spend_cap_usd,
        "over_quota": tenant.over_quota,
        "gpus_in_use": int(in_use or 0),
        "gpu_hours_this_month": round(hours, 4),
        "spend_this_month_usd": round(hours * tenant.price_usd_per_gpu_hour, 2),
    }
