"""SQLAlchemy models. Schema changes go through Alembic migrations in ``migrations/``.

SQL holds state changes only; heartbeats and telemetry live in Redis (DESIGN.md section 8).
"""

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
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from controlplane.store.types import UTCDateTime, utcnow

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


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


class Gpu(Base):
    __tablename__ = "gpus"
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
    health: Mapped[str] = mapped_column(String(16), default="healthy")
    health_reason: Mapped[str] = mapped_column(Text, default="")
    # What the policy asks for: none | notify_tenant | reset_gpu | drain_node | reboot_node | drain_nvlink_peers.
    health_action: Mapped[str] = mapped_column(String(24), default="none")
    # False when the node's latest inventory no longer lists the GPU (fell off the bus).
    present: Mapped[bool] = mapped_column(Boolean, default=True)


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Contracted capacity: reserved-class work up to this many GPUs preempts lower classes.
    reserved_gpus: Mapped[int] = mapped_column(Integer, default=0)
    # Quotas (None: unlimited) and what happens to a workload over them: reject | hold.
    max_gpus: Mapped[int | None] = mapped_column(Integer)
    gpu_hours_limit: Mapped[float | None] = mapped_column(Float)
    spend_cap_usd: Mapped[float | None] = mapped_column(Float)
    over_quota: Mapped[str] = mapped_column(String(8), default="hold")
    # The tenant's rate, for spend-cap estimates until metering prices it (issue 5).
    price_usd_per_gpu_hour: Mapped[float] = mapped_column(Float, default=3.0)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    scope: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128), default="")
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    node_id: Mapped[str | None] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), index=True)
    display_prefix: Mapped[str] = mapped_column(String(40))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class BootstrapToken(Base):
    __tablename__ = "bootstrap_tokens"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    rack_id: Mapped[str | None] = mapped_column(ForeignKey("racks.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    used_by_node_id: Mapped[str | None] = mapped_column(String(40))


class Workload(Base):
    __tablename__ = "workloads"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key"),
        Index("ix_workloads_tenant_state", "tenant_id", "state"),
        Index("ix_workloads_state", "state"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128), default="")
    gpu_count: Mapped[int] = mapped_column(Integer)
    gpu_model: Mapped[str] = mapped_column(String(96))
    nvlink: Mapped[str] = mapped_column(String(16))
    priority: Mapped[str] = mapped_column(String(16))
    command: Mapped[list[str]] = mapped_column(JSON)
    env: Mapped[dict[str, str]] = mapped_column(JSON)
    max_duration_s: Mapped[int] = mapped_column(Integer)
    sim_utilization: Mapped[float] = mapped_column(Float, default=0.9)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    # Why it is in its state: the pending reason, the failure, the cancel.
    reason: Mapped[str] = mapped_column(Text, default="")
    idempotency_key: Mapped[str | None] = mapped_column(String(128))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    epoch: Mapped[int | None] = mapped_column(BigInteger)
    master_port: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WorkloadEvent(Base):
    """Append-only history of state transitions, each with its reason."""

    __tablename__ = "workload_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workload_id: Mapped[str] = mapped_column(ForeignKey("workloads.id", ondelete="CASCADE"), index=True)
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WorkloadRank(Base):
    """One process of a workload: one node's share of the gang, as its agent last reported it."""

    __tablename__ = "workload_ranks"
    workload_id: Mapped[str] = mapped_column(ForeignKey("workloads.id", ondelete="CASCADE"), primary_key=True)
    rank: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), index=True)
    phase: Mapped[str] = mapped_column(String(16), default="assigned")
    exit_code: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Allocation(Base):
    """GPU <-> workload. At most one live (unreleased) allocation per GPU, enforced here."""

    __tablename__ = "allocations"
    __table_args__ = (
        Index(
            "uq_allocations_live_gpu",
            "gpu_id",
            unique=True,
            postgresql_where=text("released_at IS NULL"),
            sqlite_where=text("released_at IS NULL"),
        ),
        Index("ix_allocations_workload", "workload_id"),
        Index("ix_allocations_node_live", "node_id", "released_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workload_id: Mapped[str] = mapped_column(ForeignKey("workloads.id", ondelete="CASCADE"))
    gpu_id: Mapped[str] = mapped_column(ForeignKey("gpus.id", ondelete="CASCADE"))
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    rank: Mapped[int] = mapped_column(Integer)
    # The scheduler's fencing epoch when it made this allocation.
    epoch: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The node generation at which the assignment left the desired state; the allocation is
    # released once the agent has applied that generation and its process is gone.
    stop_generation: Mapped[int | None] = mapped_column(BigInteger)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WorkloadLog(Base):
    """A rank's combined stdout+stderr, appended in order as the agent ships it."""

    __tablename__ = "workload_logs"
    __table_args__ = (Index("ix_workload_logs_rank", "workload_id", "rank", "offset"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workload_id: Mapped[str] = mapped_column(ForeignKey("workloads.id", ondelete="CASCADE"))
    rank: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)


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


class Preemption(Base):
    """Every preemption: the victim, what it made room for, why, and when its GPUs came free."""

    __tablename__ = "preemptions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    victim_id: Mapped[str] = mapped_column(ForeignKey("workloads.id", ondelete="CASCADE"), index=True)
    for_workload_id: Mapped[str] = mapped_column(ForeignKey("workloads.id", ondelete="CASCADE"), index=True)
    victim_priority: Mapped[str] = mapped_column(String(16))
    gpu_count: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text, default="")
    grace_s: Mapped[float] = mapped_column(Float, default=0.0)
    noticed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MiningEvent(Base):
    """Changes to the mining budget the scheduler made: sheds for GPU work, and give-backs."""

    __tablename__ = "mining_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    delta_w: Mapped[float] = mapped_column(Float)
    planned_w: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SchedulerFence(Base):
    """The newest scheduler epoch that committed. A commit from an older leader (a paused
    process that lost its Redis lease) fails here, inside the database, whatever Redis says."""

    __tablename__ = "scheduler_fence"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger, default=0)
