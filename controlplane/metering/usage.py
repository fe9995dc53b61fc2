"""GPU time held, from allocation lifetimes: exact to the microsecond, clipped to a window; and
the measured part of the usage ledger's rows (``usage_rows``): per allocation, GPU and metering
interval, GPU time and energy from the GPU's counter curve (``counters``).

The quota and spend checks read the first (per tenant, this calendar month); the ledger prices
the second.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from controlplane.metering.counters import Point, split

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


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One ledger row's measured part: one GPU of one allocation over one metering interval."""

    key: str  # idempotency key, from its source: the same allocation, GPU and interval give the same key
    allocation_id: int
    gpu_id: str
    start_us: int
    end_us: int
    gpu_us: int  # GPU time held in the interval, microseconds
    it_mj: int  # IT energy from the GPU's counter
    facility_mj: int  # IT energy x PUE, to the millijoule (half-even)
    estimated: bool  # some of it from power samples (no counter for part of the interval)


def usage_key(allocation_id: int, gpu_id: str, start_us: int) -> str:
    return f"u/{allocation_id}/{gpu_id}/{start_us}"


def usage_rows(
    allocation_id: int,
    gpu_id: str,
    points: list[Point],
    start_us: int,
    end_us: int | None,
    *,
    interval_us: int,
    pue: Decimal,
) -> list[UsageRow]:
    """The rows of an allocation's intervals that no later reading can change: those the
    readings cover to their end, and (while it runs) that are over. A released allocation's last
    interval ends at its release; a running one's rows stop at the last whole interval its GPU
    has reported past. The same inputs give the same rows, keys included."""
    if not points:
        return []
    last = points[-1].at_us
    if end_us is None:
        end_us = last - last % interval_us  # intervals still running are left for later readings
    out: list[UsageRow] = []
    for part in split(points, start_us, end_us, interval_us):
        if not part.complete:
            break  # the readings stop here: so does what is known
        grid = part.start_us - part.start_us % interval_us
        out.append(
            UsageRow(
                usage_key(allocation_id, gpu_id, grid),
                allocation_id,
                gpu_id,
                part.start_us,
                part.end_us,
                part.end_us - part.start_us,
                part.energy_mj,
                int((part.energy_mj * pue).to_integral_value(ROUND_HALF_EVEN)),
                part.estimated,
            )
        )
    return out
