"""What tenants run: workloads, their history, their ranks, the GPUs allocated to them, their logs."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.domain.enums import NvlinkPolicy, PriorityClass, WorkloadState
from controlplane.domain.reasons import PendingCode
from controlplane.domain.specs import MAX_CHECKPOINT_INTERVAL_S, MIN_CHECKPOINT_INTERVAL_S
from controlplane.store.models.base import Base, one_of
from controlplane.store.types import UTCDateTime, utcnow

# The NVLink domains held for a planned start, as a JSON array of names (Node.nvlink_domain, at
# most 80 characters): at most this many, and at most this many characters once encoded.
MAX_PLANNED_DOMAINS = 4096
MAX_PLANNED_DOMAINS_CHARS = MAX_PLANNED_DOMAINS * 164


def encode_domains(domains: tuple[str, ...] | list[str]) -> str | None:
    """The held NVLink domains as stored: a JSON array, or None for none."""
    if not domains:
        return None
    if len(domains) > MAX_PLANNED_DOMAINS:
        raise ValueError(f"a plan holds at most {MAX_PLANNED_DOMAINS} NVLink domains, not {len(domains)}")
    encoded = json.dumps(list(domains), separators=(",", ":"))
    if len(encoded) > MAX_PLANNED_DOMAINS_CHARS:
        raise ValueError("the planned NVLink domains' names are too long to store")
    return encoded


def decode_domains(stored: str | None) -> tuple[str, ...]:
    """The held NVLink domains from what ``encode_domains`` stored (anything else: none)."""
    if not stored:
        return ()
    try:
        names = json.loads(stored)
    except ValueError:
        return ()
    if not isinstance(names, list):
        return ()
    return tuple(n for n in names if isinstance(n, str))


class Workload(Base):
    __tablename__ = "workloads"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key"),
        one_of("state", WorkloadState),
        one_of("priority", PriorityClass),
        one_of("nvlink", NvlinkPolicy),
        one_of("reason_code", PendingCode),
        CheckConstraint(
            "checkpoint_interval_s IS NULL OR checkpoint_interval_s "
            f"BETWEEN {MIN_CHECKPOINT_INTERVAL_S} AND {MAX_CHECKPOINT_INTERVAL_S}",
            name="checkpoint_interval_s_range",
        ),
        CheckConstraint(
            f"planned_domains IS NULL OR length(planned_domains) <= {MAX_PLANNED_DOMAINS_CHARS}",
            name="planned_domains_length",
        ),
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
    # While pending: the reason's bounded code (domain.reasons.PendingCode); None otherwise.
    reason_code: Mapped[str | None] = mapped_column(String(24))
    idempotency_key: Mapped[str | None] = mapped_column(String(128))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    epoch: Mapped[int | None] = mapped_column(BigInteger)
    master_port: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # While pending and blocked with a planned start: when it is expected to start, and the NVLink
    # domains held for it (``encode_domains``); cleared when it is placed or loses its plan.
    expected_start_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    planned_domains: Mapped[str | None] = mapped_column(Text)
    # The first planned start it was ever given, kept after it started: the planned-start error.
    first_expected_start_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When its current plan was first made: planned work of a class is decided in this order.
    planned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Declared by the tenant: a preemption loses the work since the last checkpoint (None: all).
    checkpoint_interval_s: Mapped[int | None] = mapped_column(Integer)


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
