"""What a tenant reads of its metered usage: GPU-hours, kWh (IT and facility) and dollars per
workload or per UTC day, from the usage ledger, at the tenant's GPU-hour price."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controlplane.domain.errors import InvalidRequest, NotFound
from controlplane.domain.money import ZERO, cents
from controlplane.store.models import Tenant, UsageHourly
from controlplane.store.queries.usage import usage_sums

MAX_DAYS = 366
_US_PER_HOUR = Decimal(3_600_000_000)
_MJ_PER_KWH = Decimal(3_600_000_000)


@dataclass(frozen=True, slots=True)
class UsageLine:
    group: str  # a workload id, or a day (YYYY-MM-DD)
    gpu_hours: Decimal
    kwh_it: Decimal
    kwh_facility: Decimal
    amount_usd: Decimal
    rows: int
    estimated_rows: int


@dataclass(frozen=True, slots=True)
class UsageView:
    start: date
    end: date
    by: Literal["workload", "day"]
    price_usd_per_gpu_hour: Decimal
    lines: tuple[UsageLine, ...]
    total_gpu_hours: Decimal
    total_kwh_facility: Decimal
    total_usd: Decimal


def _us(d: date) -> int:
    return (datetime(d.year, d.month, d.day, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        microseconds=1
    )


def usage_view(
    session: Session, *, tenant_id: str, start: date, end: date, by: Literal["workload", "day"]
) -> UsageView:
    if end <= start:
        raise InvalidRequest(f"'to' ({end}) must be after 'from' ({start})")
    if (end - start).days > MAX_DAYS:
        raise InvalidRequest(f"at most {MAX_DAYS} days at a time, asked {(end - start).days}")
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound("no such tenant")
    price = tenant.price_usd_per_gpu_hour
    lines = []
    for s in usage_sums(session, tenant_id=tenant_id, start_us=_us(start), end_us=_us(end), by=by):
        hours = Decimal(s.gpu_us) / _US_PER_HOUR
        group = s.group if by == "workload" else (date(1970, 1, 1) + timedelta(days=int(s.group))).isoformat()
        lines.append(
            UsageLine(
                group,
                hours.quantize(Decimal("0.000001")),
                (Decimal(s.it_mj) / _MJ_PER_KWH).quantize(Decimal("0.001")),
                (Decimal(s.facility_mj) / _MJ_PER_KWH).quantize(Decimal("0.001")),
                cents(hours * price),
                s.rows,
                s.estimated_rows,
            )
        )
    return UsageView(
        start,
        end,
        by,
        price,
        tuple(lines),
        sum((x.gpu_hours for x in lines), ZERO),
        sum((x.kwh_facility for x in lines), ZERO),
        sum((x.amount_usd for x in lines), ZERO),
    )


@dataclass(frozen=True, slots=True)
class TenantTotal:
    tenant_id: str
    gpu_us: int
    it_mj: int
    facility_mj: int


def tenant_totals(session: Session) -> list[TenantTotal]:
    """Every tenant's metered totals since metering began, from the hourly sums (one statement
    over tenants x hours, never the ledger's rows): the Prometheus counters."""
    h = UsageHourly
    rows = session.execute(
        select(h.tenant_id, func.sum(h.gpu_us), func.sum(h.it_mj), func.sum(h.facility_mj))
        .group_by(h.tenant_id)
        .order_by(h.tenant_id)
    ).all()
    return [TenantTotal(t, int(g), int(i), int(f)) for t, g, i, f in rows]
