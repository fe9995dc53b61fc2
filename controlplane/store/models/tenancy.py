"""Who may call: tenants with their contract and quotas, API keys, agents' bootstrap tokens."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.domain.enums import KeyScope, OverQuotaPolicy
from controlplane.domain.specs import DEFAULT_SHARE_WEIGHT
from controlplane.store.models.base import Base, one_of
from controlplane.store.types import Money, UTCDateTime, utcnow

DEFAULT_PRICE_USD_PER_GPU_HOUR = Decimal("3.00")


class Tenant(Base):
    __tablename__ = "tenants"
    __table_args__ = (
        one_of("over_quota", OverQuotaPolicy),
        CheckConstraint("share_weight > 0", name="share_weight_positive"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Contracted capacity: reserved-class work up to this many GPUs preempts lower classes.
    reserved_gpus: Mapped[int] = mapped_column(Integer, default=0)
    # Quotas (None: unlimited) and what happens to a workload over them: reject | hold.
    max_gpus: Mapped[int | None] = mapped_column(Integer)
    gpu_hours_limit: Mapped[float | None] = mapped_column(Float)
    spend_cap_usd: Mapped[Decimal | None] = mapped_column(Money)
    over_quota: Mapped[str] = mapped_column(String(8), default=OverQuotaPolicy.HOLD.value)
    # The tenant's rate, for spend-cap estimates until metering prices it (issue 11).
    price_usd_per_gpu_hour: Mapped[Decimal] = mapped_column(Money, default=DEFAULT_PRICE_USD_PER_GPU_HOUR)
    # Fair share among the tenants of one class: capacity in proportion to this weight.
    share_weight: Mapped[float] = mapped_column(Float, default=DEFAULT_SHARE_WEIGHT, server_default="1")


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (one_of("scope", KeyScope),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    scope: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128), default="")
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    node_id: Mapped[str | None] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), index=True)
    display_prefix: Mapped[str] = mapped_column(String(40))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set when the key was rotated: its successor (a key is rotated at most once).
    replaced_by_id: Mapped[str | None] = mapped_column(String(40))


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
    # Enough of the token to recognise it in a list (absent for tokens made before migration 0005).
    display_prefix: Mapped[str | None] = mapped_column(String(40))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
