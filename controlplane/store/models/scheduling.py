"""What the scheduler decided beyond placements: preemptions, and the fence that refuses a
deposed leader's writes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.store.models.base import Base
from controlplane.store.types import UTCDateTime, utcnow


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


class LeaderFence(Base):
    """Per fenced singleton role (scheduler, dispatcher): the newest leader epoch, claimed here by
    each new leader (``services.singleton.claim_epoch``). A commit from an older leader (a paused
    process that lost its Redis lease) fails here, inside the database, whatever Redis says."""

    __tablename__ = "leader_fences"
    role: Mapped[str] = mapped_column(String(32), primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger, default=0)
