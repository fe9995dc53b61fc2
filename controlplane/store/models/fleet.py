"""The site and its hardware: racks (NVLink domains), nodes (trays and their agents), GPUs and
what happened to each GPU."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.domain.enums import GpuHealth, HealthAction, NodeStatus
from controlplane.store.models.base import Base, one_of
from controlplane.store.types import UTCDateTime, utcnow


class Site(Base):
    __tablename__ = "sites"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    grid_capacity_mw: Mapped[float] = mapped_column(Float)
    pue: Mapped[float] = mapped_column(Float)
    # The scenario entry as given (racks, ASICs, prices): later capabilities read it.
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # What the ASIC fleet may draw now: the scheduler sheds it first to make room for GPUs and
    # gives it back as GPUs free up; the dispatch loop (a later issue) drives the miners to it.
    mining_planned_w: Mapped[float] = mapped_column(Float, default=0.0)


class Rack(Base):
    """One NVLink domain (an NVL72 rack)."""

    __tablename__ = "racks"
    __table_args__ = (UniqueConstraint("site_id", "name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(64))
    nodes_expected: Mapped[int] = mapped_column(Integer)
    gpus_per_node: Mapped[int] = mapped_column(Integer)
    power_capacity_kw: Mapped[float] = mapped_column(Float)
    # The NVLink fabric identity the rack's GPUs report (clusterUuid + cliqueId).
    fabric_cluster_uuid: Mapped[str] = mapped_column(String(64))
    fabric_clique_id: Mapped[int] = mapped_column(Integer)


class Node(Base):
    """One host (a GB300 compute tray) and its agent."""

    __tablename__ = "nodes"
    __table_args__ = (one_of("status", NodeStatus),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    rack_id: Mapped[str | None] = mapped_column(ForeignKey("racks.id", ondelete="SET NULL"), index=True)
    hostname: Mapped[str] = mapped_column(String(253))
    address: Mapped[str] = mapped_column(String(253))
    backend: Mapped[str] = mapped_column(String(16))
    driver_version: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="ready")
    status_reason: Mapped[str] = mapped_column(Text, default="")
    status_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    cordoned: Mapped[bool] = mapped_column(Boolean, default=False)
    draining: Mapped[bool] = mapped_column(Boolean, default=False)
    cordon_reason: Mapped[str] = mapped_column(Text, default="")
    # NVLink domain key "<clusterUuid>.<cliqueId>" when all GPUs agree and the fabric is complete.
    nvlink_domain: Mapped[str | None] = mapped_column(String(80), index=True)
    # Bumped whenever the node's desired state changes; agents long-poll on it.
    generation: Mapped[int] = mapped_column(BigInteger, default=1)
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # What the node's agent speaks and runs, as it last said (a rolling upgrade shows here).
    protocol_version: Mapped[int | None] = mapped_column(Integer)
    agent_version: Mapped[str | None] = mapped_column(String(64))
    # Where its agent serves /metrics, as it last said (protocol 3; older agents say nothing).
    metrics_url: Mapped[str | None] = mapped_column(String(255))


class Gpu(Base):
    __tablename__ = "gpus"
    __table_args__ = (one_of("health", GpuHealth), one_of("health_action", HealthAction))
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    uuid: Mapped[str] = mapped_column(String(96), unique=True)
    model: Mapped[str] = mapped_column(String(96))
    serial: Mapped[str | None] = mapped_column(String(64))
    pci_bus_id: Mapped[str | None] = mapped_column(String(32))
    memory_total_mib: Mapped[int] = mapped_column(Integer)
    power_limit_w: Mapped[float | None] = mapped_column(Float)
    fabric_cluster_uuid: Mapped[str | None] = mapped_column(String(64))
    fabric_clique_id: Mapped[int | None] = mapped_column(Integer)
    fabric_state: Mapped[str | None] = mapped_column(String(32))
    # healthy | degraded | unhealthy, as the agent's XID/ECC policy judges it; unhealthy admits no work.
    health: Mapped[str] = mapped_column(String(16), default=GpuHealth.HEALTHY.value)
    health_reason: Mapped[str] = mapped_column(Text, default="")
    # What the policy asks for: none | notify_tenant | reset_gpu | drain_node | reboot_node | drain_nvlink_peers.
    health_action: Mapped[str] = mapped_column(String(24), default=HealthAction.NONE.value)
    # False when the node's latest inventory no longer lists the GPU (fell off the bus).
    present: Mapped[bool] = mapped_column(Boolean, default=True)


class GpuEvent(Base):
    """Append-only history of what happened to a GPU: XIDs, health changes, lost and found."""

    __tablename__ = "gpu_events"
    __table_args__ = (Index("ix_gpu_events_gpu_at", "gpu_id", "at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    gpu_id: Mapped[str] = mapped_column(ForeignKey("gpus.id", ondelete="CASCADE"))
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # xid | ecc_dbe | ecc_sbe | recovery_action | health | lost | found
    xid: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
