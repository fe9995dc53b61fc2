"""GPU energy-counter readings into SQL, and an allocation's usage rows into the ledger.

Both writes are insert-or-ignore on a key from the source (a reading: its GPU and instant; a
usage row: its allocation, GPU and interval), so a report replayed from a spool, retried, or
arriving out of order adds nothing twice, and metering an allocation again writes only the
intervals that have become complete since. The arithmetic is ``controlplane.metering``'s.

The ingest path (``agents.ingest``) stores a report's readings at each checkpoint
(``Checkpoints``) before Redis records the report.

Not yet here (issue 11, left for the next session): a periodic task metering live allocations,
corrections of rows already written (a late reading inside an interval already booked moves
energy between intervals, never the total), prices on the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import case, delete, func, select, text
from sqlalchemy.orm import Session

from agents.protocol import GpuTelemetry
from controlplane.metering.counters import US_PER_S, Reading, energy_curve
from controlplane.metering.usage import UsageRow, usage_rows
from controlplane.store.bulk import add_to, among, insert_ignoring, table_of
from controlplane.store.models import Allocation, EnergyReading, Gpu, Node, Site, UsageHourly, UsageRecord, Workload

DEFAULT_INTERVAL_US = 60 * US_PER_S
US_PER_HOUR = 3600 * US_PER_S


def store_readings(session: Session, readings: Sequence[tuple[str, Reading]]) -> None:
    """(GPU id, reading) pairs; a GPU's reading of an instant already stored adds nothing."""
    rows = [
        {
            "gpu_id": gpu_id,
            "at_us": r.at_us,
            "energy_mj": r.energy_mj,
            "power_mw": None if r.power_w is None else round(r.power_w * 1000),
        }
        for gpu_id, r in readings
    ]
    insert_ignoring(session, table_of(EnergyReading), rows, ["gpu_id", "at_us"])


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Checkpoints:
    """When a report's readings go to SQL: the first report of each node in each metering
    interval (by its sample time), and every report that reaches SQL anyway (its assignments
    changed: an allocation's ends get readings next to them). Between two checkpoints the
    counter loses nothing; only the split inside an interval is interpolated from fewer
    readings. Kept per process (each API process checkpoints on its own: a few more idempotent
    writes), and marked only once the write committed: a failed write is tried again by the
    next report, and a process restarted, or Redis flushed, checkpoints at the next report."""

    MAX_NODES = 1 << 18

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_US / US_PER_S) -> None:
        self.interval_s = interval_s
        self._last: dict[str, int] = {}

    def due(self, node_id: str, sent_at: float) -> bool:
        return self._last.get(node_id) != int(sent_at // self.interval_s)

    def mark(self, node_id: str, sent_at: float) -> None:
        if len(self._last) >= self.MAX_NODES:
            self._last.clear()  # bounded: forgetting only brings a checkpoint forward
        self._last[node_id] = int(sent_at // self.interval_s)


def store_report_readings(session: Session, *, node_id: str, gpus: Sequence[GpuTelemetry], sent_at: float) -> int:
    """A report's energy-counter and power readings, at its sample time, for the node's own GPUs
    (a GPU not the node's is left out); returns how many it carried."""
    ids: dict[str, str] = dict(session.execute(select(Gpu.uuid, Gpu.id).where(Gpu.node_id == node_id)).all())
    at_us = round(sent_at * US_PER_S)
    pairs = [
        (ids[g.uuid], Reading(at_us, g.energy_mj, g.power_w))
        for g in gpus
        if g.uuid in ids and (g.energy_mj is not None or g.power_w is not None)
    ]
    store_readings(session, pairs)
    return len(pairs)


def _us(at: datetime) -> int:
    """Unix microseconds, exactly."""
    return (at - _EPOCH) // timedelta(microseconds=1)


def _reading(at_us: int, energy_mj: int | None, power_mw: int | None) -> Reading:
    """A stored reading (power in mW) as the meter reads it (W)."""
    return Reading(at_us, energy_mj, None if power_mw is None else power_mw / 1000.0)


def readings_around(session: Session, gpu_id: str, start_us: int, end_us: int | None) -> list[Reading]:
    """The GPU's readings within [start, end] and the nearest one outside each end (so the
    curve reaches both ends by interpolation)."""
    r = EnergyReading
    cols = (r.at_us, r.energy_mj, r.power_mw)
    before = session.execute(
        select(*cols).where(r.gpu_id == gpu_id, r.at_us <= start_us).order_by(r.at_us.desc()).limit(1)
    ).all()
    inside = select(*cols).where(r.gpu_id == gpu_id, r.at_us > start_us)
    if end_us is not None:
        inside = inside.where(r.at_us < end_us)
    rows = [*before, *session.execute(inside.order_by(r.at_us)).all()]
    if end_us is not None:
        rows += session.execute(
            select(*cols).where(r.gpu_id == gpu_id, r.at_us >= end_us).order_by(r.at_us).limit(1)
        ).all()
    return [_reading(at, mj, mw) for at, mj, mw in rows]


@dataclass(frozen=True, slots=True)
class Owner:
    """Whose an allocation's rows are, and what prices them."""

    tenant_id: str
    workload_id: str
    priority: str
    gpu_model: str


def _records(owner: Owner, rows: list[UsageRow]) -> list[dict[str, Any]]:
    return [
        {
            "key": u.key,
            "tenant_id": owner.tenant_id,
            "workload_id": owner.workload_id,
            "priority": owner.priority,
            "gpu_model": owner.gpu_model,
            "allocation_id": u.allocation_id,
            "gpu_id": u.gpu_id,
            "start_us": u.start_us,
            "end_us": u.end_us,
            "gpu_us": u.gpu_us,
            "it_mj": u.it_mj,
            "facility_mj": u.facility_mj,
            "estimated": u.estimated,
        }
        for u in rows
    ]


# One booking transaction at a time (PostgreSQL; SQLite's writers queue anyway): which rows are
# new is read before they are written, and two bookings of one row must not both count it.
_BOOKING_LOCK = 0x5359_4C45_4447_4552  # "SYLEDGER"
_HOURLY_KEY = ["tenant_id", "hour_us", "priority", "gpu_model"]
_HOURLY_SUMS = ["gpu_us", "it_mj", "facility_mj", "rows", "estimated_rows"]


def _add_hourly(session: Session, sums: dict[tuple[str, int, str, str], list[int]]) -> None:
    add_to(
        session,
        table_of(UsageHourly),
        [dict(zip(_HOURLY_KEY + _HOURLY_SUMS, (*k, *v), strict=True)) for k, v in sorted(sums.items())],
        _HOURLY_KEY,
        _HOURLY_SUMS,
    )


def book(session: Session, batches: Sequence[tuple[Owner, list[UsageRow]]]) -> int:
    """Append (owner, rows) batches to the ledger (rows already there add nothing) and add the
    new ones to their tenants' hourly sums, in the caller's transaction; returns how many rows
    were new."""
    records = [r for owner, rows in batches for r in _records(owner, rows)]
    if not records:
        return 0
    if session.connection().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _BOOKING_LOCK})
    keys = [r["key"] for r in records]
    seen: set[str] = set()
    for cond in among(session, UsageRecord.key, keys):
        seen.update(session.scalars(select(UsageRecord.key).where(cond)))
    new = [r for r in records if r["key"] not in seen]
    insert_ignoring(session, table_of(UsageRecord), new, ["key"])
    hours: dict[tuple[str, int, str, str], list[int]] = {}
    for r in new:
        k = (r["tenant_id"], r["start_us"] - r["start_us"] % US_PER_HOUR, r["priority"], r["gpu_model"])
        acc = hours.setdefault(k, [0, 0, 0, 0, 0])
        acc[0] += r["gpu_us"]
        acc[1] += r["it_mj"]
        acc[2] += r["facility_mj"]
        acc[3] += 1
        acc[4] += r["estimated"]
    _add_hourly(session, hours)
    return len(new)


def meter_allocation(
    session: Session, allocation_id: int, *, pue: Decimal, interval_us: int = DEFAULT_INTERVAL_US
) -> list[UsageRow]:
    """Write the allocation's usage rows that are complete (``usage.usage_rows``); those written
    before add nothing. Returns the rows computed (written now or before)."""
    alloc, tenant_id, priority, gpu_model = session.execute(
        select(Allocation, Workload.tenant_id, Workload.priority, Workload.gpu_model)
        .join(Workload, Workload.id == Allocation.workload_id)
        .where(Allocation.id == allocation_id)
    ).one()
    start_us = _us(alloc.created_at)
    end_us = None if alloc.released_at is None else _us(alloc.released_at)
    points = energy_curve(readings_around(session, alloc.gpu_id, start_us, end_us))
    rows = usage_rows(alloc.id, alloc.gpu_id, points, start_us, end_us, interval_us=interval_us, pue=pue)
    book(session, [(Owner(tenant_id, alloc.workload_id, priority, gpu_model), rows)])
    return rows


def meter_open(
    session: Session,
    *,
    site_id: str,
    now: datetime,
    pue: Decimal,
    settle_s: float = 3600.0,
    interval_us: int = DEFAULT_INTERVAL_US,
) -> int:
    """One metering run of a site (the periodic task): every allocation on its nodes still
    running, or released within ``settle_s`` (its last readings may still be spooled), gets its
    rows from the last one written on, in a few statements for the whole site. Idempotent;
    returns the rows written."""
    since = now - timedelta(seconds=settle_s)
    allocs = session.execute(
        select(
            Allocation.id,
            Allocation.gpu_id,
            Allocation.workload_id,
            Allocation.created_at,
            Allocation.released_at,
            Workload.tenant_id,
            Workload.priority,
            Workload.gpu_model,
        )
        .join(Workload, Workload.id == Allocation.workload_id)
        .join(Node, Node.id == Allocation.node_id)
        .where(Node.site_id == site_id, (Allocation.released_at.is_(None)) | (Allocation.released_at >= since))
    ).all()
    if not allocs:
        return 0
    ids = [a.id for a in allocs]
    done: dict[int, int] = {}
    for cond in among(session, UsageRecord.allocation_id, ids):
        last = select(UsageRecord.allocation_id, func.max(UsageRecord.end_us)).where(cond)
        done.update((i, end) for i, end in session.execute(last.group_by(UsageRecord.allocation_id)))
    starts = {a.id: max(_us(a.created_at), done.get(a.id, 0)) for a in allocs}
    # The readings each GPU needs: from one interval before its earliest start (the reading
    # just before it), in one pass over the table's primary key.
    lo: dict[str, int] = {}
    for a in allocs:
        lo[a.gpu_id] = min(lo.get(a.gpu_id, starts[a.id]), starts[a.id])
    floor_us = min(lo.values()) - 2 * interval_us
    by_gpu: dict[str, list[Reading]] = {}
    r = EnergyReading
    for cond in among(session, r.gpu_id, sorted(lo)):
        stmt = select(r.gpu_id, r.at_us, r.energy_mj, r.power_mw).where(cond, r.at_us >= floor_us)
        for gpu_id, at, mj, mw in session.execute(stmt):
            by_gpu.setdefault(gpu_id, []).append(_reading(at, mj, mw))
    for gpu_id, start in lo.items():
        got = by_gpu.get(gpu_id, [])
        if not any(x.at_us <= start for x in got):
            # No reading at or before its start in the window (a long gap): the one before it,
            # however old, or energy across the gap would be counted in no row.
            by_gpu[gpu_id] = readings_around(session, gpu_id, start, None)
    batches = []
    for a in allocs:
        readings = by_gpu.get(a.gpu_id, [])
        end_us = None if a.released_at is None else _us(a.released_at)
        rows = usage_rows(
            a.id, a.gpu_id, energy_curve(readings), starts[a.id], end_us, interval_us=interval_us, pue=pue
        )
        if rows:
            batches.append((Owner(a.tenant_id, a.workload_id, a.priority, a.gpu_model), rows))
    return book(session, batches)


def meter_sites(session: Session, *, now: datetime, settle_s: float = 3600.0) -> dict[str, int]:
    """``meter_open`` for every site at its PUE: rows written per site id."""
    sites = session.execute(select(Site.id, Site.pue)).all()
    return {
        sid: meter_open(session, site_id=sid, now=now, pue=Decimal(str(pue)), settle_s=settle_s) for sid, pue in sites
    }


def rebuild_hourly(session: Session) -> None:
    """The hourly sums again from the ledger alone (they are derived: this is their definition)."""
    u = UsageRecord
    hour = u.start_us - u.start_us % US_PER_HOUR
    session.execute(delete(UsageHourly))
    sums = session.execute(
        select(
            u.tenant_id,
            hour,
            u.priority,
            u.gpu_model,
            func.sum(u.gpu_us),
            func.sum(u.it_mj),
            func.sum(u.facility_mj),
            func.count(),
            func.sum(case((u.estimated, 1), else_=0)),
        ).group_by(u.tenant_id, hour, u.priority, u.gpu_model)
    ).all()
    _add_hourly(session, {(t, h, p, m): [g, i, f, n, e] for t, h, p, m, g, i, f, n, e in sums})
