"""The fleet as operators list it: sites, racks, nodes and GPUs with their live state, GPU
events, preemptions, tenants and their keys.

Every list costs a bounded number of statements whatever its length. Node and GPU views merge
database state with the latest sample in Redis, read after the database session has closed.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from controlplane.domain.errors import NotFound
from controlplane.domain.gpu import GpuState
from controlplane.live.nodes import EnergyCount, LiveState
from controlplane.services.admin.keys import node_credentials
from controlplane.services.fleet.gpus import GpuRow, gpu_states
from controlplane.store.models import ApiKey, Gpu, GpuEvent, Node, Preemption, Rack, Site, Tenant


@dataclass(frozen=True)
class SiteView:
    site: Site
    racks: int


def sites(session: Session) -> list[SiteView]:
    counts = dict(session.execute(select(Rack.site_id, func.count()).group_by(Rack.site_id)).all())
    return [SiteView(s, counts.get(s.id, 0)) for s in session.scalars(select(Site).order_by(Site.name))]


def get_site(session: Session, site_id_or_name: str) -> Site:
    site = session.get(Site, site_id_or_name) or session.scalar(select(Site).where(Site.name == site_id_or_name))
    if site is None:
        raise NotFound(f"no site {site_id_or_name!r}")
    return site


@dataclass(frozen=True)
class RackView:
    rack: Rack
    nodes_registered: int


def racks(session: Session, site_id: str | None = None) -> list[RackView]:
    registered = dict(session.execute(select(Node.rack_id, func.count()).group_by(Node.rack_id)).all())
    query = select(Rack).order_by(Rack.name)
    if site_id is not None:
        query = query.where(Rack.site_id == site_id)
    return [RackView(r, registered.get(r.id, 0)) for r in session.scalars(query)]


@dataclass(frozen=True)
class GpuLive:
    row: GpuRow
    telemetry: dict[str, Any] | None
    energy: EnergyCount | None


@dataclass(frozen=True)
class NodeLive:
    node: Node
    gpus: list[GpuLive]
    lease_alive: bool
    reports_accepted: int = 0
    reports_duplicate: int = 0
    last_seq: int | None = None
    # The node's live (unrevoked) agent credential; None once it is revoked and not yet rotated.
    credential_id: str | None = None


def _with_live(live: LiveState, rows: list[GpuRow]) -> list[GpuLive]:
    node_ids = sorted({r.node.id for r in rows})
    samples, energy = live.gpu_samples(node_ids), live.energy(node_ids)
    # By node and UUID: what a node's hashes hold about another node's GPU is never shown.
    return [GpuLive(r, samples[r.node.id].get(r.gpu.uuid), energy[r.node.id].get(r.gpu.uuid)) for r in rows]


def nodes(
    read: sessionmaker[Session],
    live: LiveState,
    *,
    node_ids: Collection[str] | None = None,
    rack_id: str | None = None,
    now: float | None = None,
) -> list[NodeLive]:
    """Four statements and three Redis round trips (pipelined) for any number of nodes."""
    with read() as session:
        query = select(Node).order_by(Node.hostname)
        if rack_id is not None:
            query = query.where(Node.rack_id == rack_id)
        if node_ids is not None:
            query = query.where(Node.id.in_(list(node_ids)))
        found = list(session.scalars(query))
        rows = gpu_states(session, node_ids=[n.id for n in found]) if found else []
        credentials = node_credentials(session, [n.id for n in found])
    ids = [n.id for n in found]
    gpus: dict[str, list[GpuLive]] = {}
    for g in _with_live(live, rows):
        gpus.setdefault(g.row.node.id, []).append(g)
    liveness = live.node_liveness(ids, now=time.time() if now is None else now)
    out = []
    for n in found:
        alive, (accepted, duplicate, seq) = liveness[n.id]
        out.append(NodeLive(n, gpus.get(n.id, []), alive, accepted, duplicate, seq, credentials.get(n.id)))
    return out


def node(read: sessionmaker[Session], live: LiveState, node_id: str) -> NodeLive:
    found = nodes(read, live, node_ids=[node_id])
    if not found:
        raise NotFound(f"no node {node_id!r}")
    return found[0]


def gpus(read: sessionmaker[Session], live: LiveState, *, state: GpuState | None = None) -> list[GpuLive]:
    with read() as session:
        rows = gpu_states(session)
    return _with_live(live, [r for r in rows if state is None or r.state is state])


def gpu_events(session: Session, *, gpu_id: str, limit: int) -> list[GpuEvent]:
    """XIDs, health changes, lost and found: newest first."""
    if session.get(Gpu, gpu_id) is None:
        raise NotFound(f"no GPU {gpu_id!r}")
    return list(
        session.scalars(select(GpuEvent).where(GpuEvent.gpu_id == gpu_id).order_by(GpuEvent.id.desc()).limit(limit))
    )


def preemptions(session: Session, *, limit: int) -> list[Preemption]:
    """Every preemption, newest first: victim, what it made room for, why, grace, when freed."""
    return list(session.scalars(select(Preemption).order_by(Preemption.id.desc()).limit(limit)))


def tenants(session: Session) -> list[Tenant]:
    return list(session.scalars(select(Tenant).order_by(Tenant.name)))


def tenant_keys(session: Session, *, tenant_id: str) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.id)))
