"""A tenant's monthly invoice from the ledger's hourly sums (``usage_hourly``: the ledger summed
per hour, class and GPU model, derived from it alone), priced by the tenant's plans: the same
ledger gives the same bytes, and an invoice is final once its month and the grace window after
it (late reports land in it until then) are over.

The plans today: the tenant's GPU-hour price for every class and model (``Tenant.
price_usd_per_gpu_hour``, what quotas and spend caps count). Energy pass-through, contracted kW
and minimums (``metering.pricing``) have no table yet: not configurable (issue 11, left).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.domain.enums import PriorityClass
from controlplane.domain.errors import InvalidRequest, NotFound
from controlplane.metering.invoice import Invoice, LedgerEntry, build_invoice
from controlplane.metering.pricing import GpuHourRate, PricePlan
from controlplane.store.models import Tenant, UsageHourly

GRACE = timedelta(hours=1)  # late data lands in its own period until then (Stripe's default)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def tenant_plans(tenant: Tenant) -> list[PricePlan]:
    return [PricePlan("gpu-hour", gpu_hour=(GpuHourRate(tenant.price_usd_per_gpu_hour),))]


def _month(month: str) -> tuple[datetime, datetime]:
    try:
        first = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidRequest(f"a month is YYYY-MM, got {month!r}") from None
    nxt = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
    return first, datetime(nxt.year, nxt.month, 1, tzinfo=UTC)


def monthly_invoice(session: Session, *, tenant_id: str, month: str, now: datetime) -> Invoice:
    start, end = _month(month)
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound("no such tenant")
    lo, hi = ((t - _EPOCH) // timedelta(microseconds=1) for t in (start, end))
    h = UsageHourly
    rows = session.execute(
        select(h.hour_us, h.priority, h.gpu_model, h.gpu_us, h.it_mj, h.facility_mj, h.rows, h.estimated_rows).where(
            h.tenant_id == tenant_id, h.hour_us >= lo, h.hour_us < hi
        )
    ).all()
    entries = [
        LedgerEntry(f"h/{hour}/{prio}/{model}", "", PriorityClass(prio), model, hour, g, i, f, e, n)
        for hour, prio, model, g, i, f, n, e in rows
    ]
    invoice = build_invoice(tenant_id, start, end, entries, tenant_plans(tenant))
    if now >= end + GRACE:
        return replace(invoice, status="final")
    return invoice
