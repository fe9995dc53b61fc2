"""Metering: GPU energy-counter readings (the checkpoints energy is computed from) and the
append-only usage ledger (issue 11; ``controlplane.metering`` computes both's contents)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.store.models.base import Base
from controlplane.store.types import UTCDateTime, utcnow


class EnergyReading(Base):
    """One sample of a GPU's NVML energy counter (mJ since driver load) and power, at the agent's
    sample time: one per GPU and instant (a duplicate report adds nothing)."""

    __tablename__ = "energy_readings"
    __table_args__ = (
        CheckConstraint("energy_mj IS NULL OR energy_mj >= 0", name="energy_mj_range"),
        CheckConstraint("power_mw IS NULL OR power_mw >= 0", name="power_mw_range"),
    )
    gpu_id: Mapped[str] = mapped_column(ForeignKey("gpus.id", ondelete="CASCADE"), primary_key=True)
    at_us: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # unix microseconds, agent clock
    energy_mj: Mapped[int | None] = mapped_column(BigInteger)
    power_mw: Mapped[int | None] = mapped_column(BigInteger)


class UsageRecord(Base):
    """An append-only ledger row: one GPU of one allocation over one metering interval. Its key
    comes from its source, so writing the same row twice adds nothing; a correction is a new row
    (its own key), never an update."""

    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_records_tenant_start", "tenant_id", "start_us"),
        Index("ix_usage_records_allocation", "allocation_id"),
        CheckConstraint("end_us > start_us", name="interval_order"),
        CheckConstraint("gpu_us >= 0 AND gpu_us <= end_us - start_us", name="gpu_us_range"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    # Plain ids, no foreign keys: the books outlive the rows they were computed from.
    tenant_id: Mapped[str] = mapped_column(String(40))
    workload_id: Mapped[str] = mapped_column(String(40))
    priority: Mapped[str] = mapped_column(String(16))  # the workload's class: what prices its GPU time
    gpu_model: Mapped[str] = mapped_column(String(96))
    allocation_id: Mapped[int] = mapped_column(BigInteger)
    gpu_id: Mapped[str] = mapped_column(String(40))
    start_us: Mapped[int] = mapped_column(BigInteger)
    end_us: Mapped[int] = mapped_column(BigInteger)
    gpu_us: Mapped[int] = mapped_column(BigInteger)
    it_mj: Mapped[int] = mapped_column(BigInteger)
    facility_mj: Mapped[int] = mapped_column(BigInteger)
    estimated: Mapped[bool] = mapped_column(Boolean)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class UsageHourly(Base):
    """The ledger summed per tenant, UTC hour (by interval start), class and GPU model, kept in the transaction
    that writes the ledger rows: what dashboards, usage views and quotas read instead of the
    rows. It can always be rebuilt from the ledger (``services/metering/record.rebuild_hourly``)."""

    __tablename__ = "usage_hourly"
    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    hour_us: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # unix microseconds, on the hour
    priority: Mapped[str] = mapped_column(String(16), primary_key=True)
    gpu_model: Mapped[str] = mapped_column(String(96), primary_key=True)
    gpu_us: Mapped[int] = mapped_column(BigInteger)
    it_mj: Mapped[int] = mapped_column(BigInteger)
    facility_mj: Mapped[int] = mapped_column(BigInteger)
    rows: Mapped[int] = mapped_column(BigInteger)
    estimated_rows: Mapped[int] = mapped_column(BigInteger)
