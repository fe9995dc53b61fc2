"""GPU time held, from allocation lifetimes: exact to the microsecond, clipped to a window.

The quota and spend checks read this (per tenant, this calendar month); the ledger of issue 11
will price the same intervals.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal

_US = timedelta(microseconds=1)
_US_PER_S = Decimal(1_000_000)


def held_seconds(created: datetime, released: datetime | None, *, start: datetime, end: datetime) -> Decimal:
    """Seconds of [created, released or end) inside [start, end); never negative."""
    lo = max(created, start)
    hi = min(released or end, end)
    if hi <= lo:
        return Decimal(0)
    return Decimal((hi - lo) // _US) / _US_PER_S


def gpu_seconds_by_tenant(
    allocations: Iterable[tuple[str, datetime, datetime | None]], *, start: datetime, end: datetime
) -> dict[str, Decimal]:
    """GPU-seconds per tenant from (tenant, allocation created, released) rows, one per GPU."""
    out: dict[str, Decimal] = {}
    for tenant_id, created, released in allocations:
        held = held_seconds(created, released, start=start, end=end)
        if held:
            out[tenant_id] = out.get(tenant_id, Decimal(0)) + held
    return out


def month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
