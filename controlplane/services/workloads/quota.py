"""A tenant's quota: what it used of it this month, for its own view and for the check at
submission (tenants whose policy rejects over-quota work are refused there, with the reason)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controlplane.domain.errors import NotFound
from controlplane.domain.money import cents
from controlplane.scheduling.snapshot import TenantPolicy
from controlplane.services.scheduler.build import gpu_seconds_this_month, tenant_policy
from controlplane.store.models import Allocation, Tenant, Workload
from controlplane.store.types import utcnow


@dataclass(frozen=True)
class TenantUsage:
    tenant: Tenant
    policy: TenantPolicy
    gpus_in_use: int


def tenant_usage(session: Session, *, tenant_id: str, now: datetime | None = None) -> TenantUsage:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound(f"no tenant {tenant_id!r}")
    now = now or utcnow()
    seconds = gpu_seconds_this_month(session, now, tenant_id=tenant_id).get(tenant_id, Decimal(0))
    in_use = session.scalar(
        select(func.count())
        .select_from(Allocation)
        .join(Workload, Workload.id == Allocation.workload_id)
        .where(Workload.tenant_id == tenant_id, Allocation.released_at.is_(None))
    )
    return TenantUsage(tenant, tenant_policy(tenant, seconds), int(in_use or 0))


@dataclass(frozen=True)
class QuotaView:
    reserved_gpus: int
    max_gpus: int | None
    gpu_hours_limit: float | None
    spend_cap_usd: Decimal | None
    over_quota: str
    gpus_in_use: int
    gpu_hours_this_month: float
    spend_this_month_usd: Decimal
    share_weight: float = 1.0


def quota_view(session: Session, *, tenant_id: str) -> QuotaView:
    usage = tenant_usage(session, tenant_id=tenant_id)
    tenant, policy = usage.tenant, usage.policy
    return QuotaView(
        reserved_gpus=tenant.reserved_gpus,
        max_gpus=tenant.max_gpus,
        gpu_hours_limit=tenant.gpu_hours_limit,
        spend_cap_usd=tenant.spend_cap_usd,
        over_quota=tenant.over_quota,
        gpus_in_use=usage.gpus_in_use,
        gpu_hours_this_month=round(policy.gpu_hours_used, 4),
        spend_this_month_usd=cents(policy.spend_used_usd),
        share_weight=tenant.share_weight,
    )
