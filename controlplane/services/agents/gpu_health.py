"""What a report says about the GPUs themselves: health, XID events, and inventory changes.

Health is judged on the agent (agents/health.py) and mirrored here only when it changes, so the
scheduler can keep unhealthy GPUs (and nodes whose GPUs ask for a drain or reboot) out of
placements. Every XID, health change, lost and found GPU is appended to ``gpu_events``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from agents.protocol import GpuInventory, GpuTelemetry, NodeInventory, XidEvent
from controlplane.domain.enums import NODE_ACTIONS, GpuHealth, HealthAction
from controlplane.domain.ids import new_id
from controlplane.services.uow import wakeups
from controlplane.store.models import Gpu, GpuEvent, Node


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


def fold(
    session: Session,
    *,
    node: Node,
    gpus: Iterable[GpuTelemetry],
    events: Iterable[XidEvent],
    inventory: NodeInventory | None,
    now: datetime,
) -> None:
    rows = {g.uuid: g for g in session.scalars(select(Gpu).where(Gpu.node_id == node.id)).all()}
    if inventory is not None:
        _apply_inventory(session, node, rows, inventory, now)
    for event in events:
        gpu = rows.get(event.uuid)
        if gpu is not None:
            at = datetime.fromtimestamp(event.at, tz=UTC)
            detail = event.detail or ""
            session.add(
                GpuEvent(gpu_id=gpu.id, node_id=node.id, kind=event.kind.value, xid=event.xid, detail=detail, at=at)
            )
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
