"""What a report says about the GPUs themselves: health, XID events, and inventory changes.

Health is judged on the agent (agents/health.py) and mirrored here only when it changes, so the
scheduler can keep unhealthy GPUs (and nodes whose GPUs ask for a drain or reboot) out of
placements. Every XID, health change, lost and found GPU is appended to ``gpu_events``.

A node speaks for its own GPUs only: health and events of a UUID that is not one of the node's
GPUs are dropped (and logged), and an inventory can never hold more GPUs than a node of the
site's racks has (``check_inventory``), so an agent cannot add capacity the scheduler would use.
The fold is idempotent: an event already recorded (same GPU, kind, XID, time and detail) is not
recorded twice, so a report folded again after Redis missed its commit adds nothing.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from agents.protocol import GpuInventory, GpuTelemetry, NodeInventory, XidEvent
from controlplane.domain.enums import NODE_ACTIONS, GpuHealth, HealthAction
from controlplane.domain.errors import Forbidden, InvalidRequest
from controlplane.domain.ids import new_id
from controlplane.domain.site import SiteSpec
from controlplane.services.uow import wakeups
from controlplane.store.models import Gpu, GpuEvent, Node, Rack, Site

log = logging.getLogger(__name__)

# GPU records a node may keep, lost ones included, per GPU slot of its shape: room for GPUs
# swapped under RMA, while an agent making up UUIDs cannot grow the table without bound.
GPU_RECORDS_PER_SLOT = 4


def new_gpu(node_id: str, g: GpuInventory) -> Gpu:
    return Gpu(
        id=new_id("gpu"),
        node_id=node_id,
        index=g.index,
        uuid=g.uuid,
        model=g.name,
        serial=g.serial,
        pci_bus_id=g.pci_bus_id,
        memory_total_mib=g.memory_total_mib,
        power_limit_w=g.power_limit_default_w,
        fabric_cluster_uuid=g.fabric_cluster_uuid,
        fabric_clique_id=g.fabric_clique_id,
        fabric_state=g.fabric_state,
    )


def nvlink_domain(inventory: NodeInventory) -> str | None:
    """The node's NVLink domain, as NVIDIA's feature discovery labels it: all GPUs must agree
    on clusterUuid.cliqueId and have a completed fabric, else the node has none."""
    ids = {(g.fabric_cluster_uuid, g.fabric_clique_id) for g in inventory.gpus}
    if len(ids) != 1 or not inventory.gpus:
        return None
    cluster, clique = ids.pop()
    if not cluster or clique is None or any((g.fabric_state or "") != "completed" for g in inventory.gpus):
        return None
    return f"{cluster}.{clique}"


def gpus_per_node(session: Session, *, site_id: str, rack_id: str | None) -> int:
    """How many GPUs a node of this rack (or, without one, of the site's racks) has."""
    if rack_id is not None:
        rack = session.get(Rack, rack_id)
        if rack is not None:
            return rack.gpus_per_node
    site = session.get(Site, site_id)
    if site is None:
        raise Forbidden("this node's site no longer exists")
    return SiteSpec.parse(site.spec).racks.gpus_per_node


def check_inventory(session: Session, *, node_id: str, inventory: NodeInventory) -> None:
    """Refuse an inventory a node of the site cannot have: more GPUs than its shape, or more GPU
    records than GPU_RECORDS_PER_SLOT per slot. Read-only, so ingest calls it before any write."""
    node = session.get(Node, node_id)
    if node is None:
        raise Forbidden("this node no longer exists")
    shape = gpus_per_node(session, site_id=node.site_id, rack_id=node.rack_id)
    if len(inventory.gpus) > shape:
        raise InvalidRequest(
            f"the inventory lists {len(inventory.gpus)} GPUs; a node of this site has {shape}: "
            "the inventory change is refused"
        )
    listed = [g.uuid for g in inventory.gpus]
    own = set(session.scalars(select(Gpu.uuid).where(Gpu.node_id == node_id)).all())
    new = [uuid for uuid in listed if uuid not in own]
    taken = set(session.scalars(select(Gpu.uuid).where(Gpu.uuid.in_(new))).all()) if new else set()
    records = len(own) + len([uuid for uuid in new if uuid not in taken])
    if records > GPU_RECORDS_PER_SLOT * shape:
        raise InvalidRequest(
            f"the inventory would give this node {records} GPU records (lost ones included), more than "
            f"{GPU_RECORDS_PER_SLOT} per GPU slot: register the node again to start a new record"
        )


def fold(
    session: Session,
    *,
    node: Node,
    gpus: Sequence[GpuTelemetry],
    events: Sequence[XidEvent],
    inventory: NodeInventory | None,
    now: datetime,
) -> list[str]:
    """Fold a report's inventory, events and health; the node's GPU UUIDs after it."""
    # Locked: a report folded twice at once (a retry through another replica) records its events
    # once. Only folds lock GPU rows, and they take them first, so no lock order can deadlock.
    rows = {g.uuid: g for g in session.scalars(select(Gpu).where(Gpu.node_id == node.id).with_for_update()).all()}
    if inventory is not None:
        check_inventory(session, node_id=node.id, inventory=inventory)
        _apply_inventory(session, node, rows, inventory, now)
    _record_events(session, node, rows, events)
    foreign = sorted({s.uuid for s in gpus if s.uuid not in rows})
    if foreign:
        log.warning("node %s reported health for GPUs that are not its own, dropped: %s", node.id, foreign[:8])
    for sample in gpus:
        gpu = rows.get(sample.uuid)
        if gpu is None:
            continue
        reason = "; ".join(sample.health_reasons)
        # The wire's enums and the domain's spell every value the same (tests/unit/test_domain_types.py).
        health, action = GpuHealth(sample.health.value), HealthAction(sample.health_action.value)
        if (gpu.health, gpu.health_action, gpu.health_reason) == (health, action, reason):
            continue
        detail = f"{gpu.health} -> {health}" + (f": {reason}" if reason else "")
        session.add(GpuEvent(gpu_id=gpu.id, node_id=node.id, kind="health", detail=detail, at=now))
        if health is GpuHealth.HEALTHY or gpu.health == GpuHealth.UNHEALTHY or action in NODE_ACTIONS:
            wakeups(session).scheduler = True  # capacity came back, or a node left
        gpu.health, gpu.health_action, gpu.health_reason = health.value, action.value, reason
    return list(rows)


def _record_events(session: Session, node: Node, rows: dict[str, Gpu], events: Sequence[XidEvent]) -> None:
    foreign = sorted({e.uuid for e in events if e.uuid not in rows})
    if foreign:
        log.warning("node %s reported events of GPUs that are not its own, dropped: %s", node.id, foreign[:8])
    found = [
        (rows[e.uuid].id, e.kind.value, e.xid, datetime.fromtimestamp(e.at, tz=UTC), e.detail or "")
        for e in events
        if e.uuid in rows
    ]
    if not found:
        return
    ats = [at for _, _, _, at, _ in found]
    rows_found = session.execute(
        select(GpuEvent.gpu_id, GpuEvent.kind, GpuEvent.xid, GpuEvent.at, GpuEvent.detail).where(
            GpuEvent.gpu_id.in_(sorted({gpu_id for gpu_id, *_ in found})),
            GpuEvent.at >= min(ats),
            GpuEvent.at <= max(ats),
        )
    ).all()
    recorded: Counter[tuple[str, str, int | None, datetime, str]] = Counter(
        (gpu_id, kind, xid, at, detail or "") for gpu_id, kind, xid, at, detail in rows_found
    )
    for gpu_id, kind, xid, at, detail in found:
        key = (gpu_id, kind, xid, at, detail)
        if recorded[key] > 0:
            recorded[key] -= 1  # this report was folded before (a retry after Redis missed its
            continue  # commit): each of its events is recorded once
        session.add(GpuEvent(gpu_id=gpu_id, node_id=node.id, kind=kind, xid=xid, detail=detail, at=at))


def _apply_inventory(
    session: Session, node: Node, rows: dict[str, Gpu], inventory: NodeInventory, now: datetime
) -> None:
    listed = {g.uuid: g for g in inventory.gpus}
    for uuid, gpu in rows.items():
        if uuid not in listed and gpu.present:
            gpu.present = False
            session.add(
                GpuEvent(gpu_id=gpu.id, node_id=node.id, kind="lost", detail="not in the node's inventory", at=now)
            )
        elif uuid in listed and not gpu.present:
            gpu.present = True
            session.add(GpuEvent(gpu_id=gpu.id, node_id=node.id, kind="found", detail="back in the inventory", at=now))
            wakeups(session).scheduler = True
    new = [g for uuid, g in listed.items() if uuid not in rows]
    if new:
        taken = set(session.scalars(select(Gpu.uuid).where(Gpu.uuid.in_([g.uuid for g in new]))).all())
        for g in new:
            if g.uuid in taken:
                continue  # registered to another node: that node's record wins until an operator acts
            gpu = new_gpu(node.id, g)
            session.add(gpu)
            session.flush()
            rows[g.uuid] = gpu
            session.add(GpuEvent(gpu_id=gpu.id, node_id=node.id, kind="found", detail="new GPU", at=now))
        wakeups(session).scheduler = True
    node.nvlink_domain = nvlink_domain(inventory)
    if inventory.driver_version:
        node.driver_version = inventory.driver_version
