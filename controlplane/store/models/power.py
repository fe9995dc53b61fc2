"""The site's power split: the mining budget's history."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Float,
    ForeignKey,
    Integer,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.store.models.base import Base
from controlplane.store.types import UTCDateTime, utcnow


class MiningEvent(Base):
    """Changes to the mining budget the scheduler made: sheds for GPU work, and give-backs."""

    __tablename__ = "mining_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    delta_w: Mapped[float] = mapped_column(Float)
    planned_w: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
