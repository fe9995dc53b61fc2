"""Counter readings and the usage ledger in SQL (PostgreSQL and SQLite): a GB300 simulator's
readings stored shuffled and twice over, an allocation metered as its readings arrive, and the
ledger's rows adding up to the counter to the millijoule with none written twice."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from factories import make_site, make_tenant, register_node
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agents.gpu.sim import SimBackend
from agents.protocol import MAX_BATCH_REPORTS, PROTOCOL_VERSION
from controlplane.domain.ids import new_id
from controlplane.metering.counters import US_PER_S, Reading
from controlplane.metering.usage import UsageRow
from controlplane.runtime import Runtime
from controlplane.services.metering.record import (
    Owner,
    book,
    meter_allocation,
    meter_sites,
    rebuild_hourly,
    store_readings,
)
from controlplane.store.models import Allocation, EnergyReading, Gpu, Site, UsageHourly, UsageRecord, Workload

T0 = datetime(2026, 12, 1, tzinfo=UTC)
PUE = Decimal("1.25")


def _setup(runtime: Runtime) -> tuple[str, str, int]:
    """A tenant's workload holding GPU 0 of a node from T0 + 20 s (released later by the test)."""
    make_site(runtime)
    node = register_node(runtime, 1)
    tenant = make_tenant(runtime, "acme")
    with runtime.uow() as s:
        gpu = s.scalars(select(Gpu).where(Gpu.node_id == node.node_id, Gpu.index == 0)).one()
        wl = Workload(
            id=new_id("wl"),
            tenant_id=tenant.tenant_id,
            gpu_count=1,
            gpu_model="NVIDIA GB300",
            nvlink="none",
            priority="on_demand",
            command=["true"],
            env={},
            max_duration_s=3600,
        )
        s.add(wl)
        s.flush()
        alloc = Allocation(
            workload_id=wl.id,
            gpu_id=gpu.id,
            node_id=node.node_id,
            rank=0,
            epoch=1,
            created_at=T0 + timedelta(seconds=20),
        )
        s.add(alloc)
        s.flush()
        return tenant.tenant_id, gpu.id, alloc.id


def _sim_readings(seconds: int) -> list[Reading]:
    """A simulated GB300 under changing load, sampled every 5 s from T0 (inclusive)."""
    now = [T0.timestamp()]
    sim = SimBackend(1, clock=lambda: now[0], seed=11)
    uuid = sim.inventory()[0].uuid
    rnd = random.Random(5)
    out = []
    for step in range(seconds // 5 + 1):
        if step % 7 == 0:
            sim.set_load(uuid, rnd.random(), 1000.0)
        (g,) = sim.sample()
        out.append(Reading(round(now[0] * US_PER_S), g.energy_mj, g.power_w))
        now[0] += 5.0
    return out


def us(seconds: int) -> int:
    """T0 + ``seconds`` in unix microseconds."""
    return round((T0 + timedelta(seconds=seconds)).timestamp() * US_PER_S)


def _mj(r: Reading) -> int:
    assert r.energy_mj is not None
    return r.energy_mj


def _ledger(session: Session, alloc_id: int) -> list[tuple[str, int, int, int, int, int]]:
    rows = session.execute(
        select(
            UsageRecord.key,
            UsageRecord.start_us,
            UsageRecord.end_us,
            UsageRecord.gpu_us,
            UsageRecord.it_mj,
            UsageRecord.facility_mj,
        )
        .where(UsageRecord.allocation_id == alloc_id)
        .order_by(UsageRecord.start_us)
    ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def _hourly(session: Session) -> list[tuple[str, int, int, int, int]]:
    rows = session.execute(
        select(
            UsageHourly.tenant_id, UsageHourly.hour_us, UsageHourly.gpu_us, UsageHourly.it_mj, UsageHourly.rows
        ).order_by(UsageHourly.tenant_id, UsageHourly.hour_us)
    ).all()
    return [(t, h, g, i, n) for t, h, g, i, n in rows]


def test_an_allocation_metered_as_its_readings_arrive_adds_up_to_its_counter(runtime: Runtime) -> None:
    tenant_id, gpu_id, alloc_id = _setup(runtime)
    readings = _sim_readings(300)
    at = {r.at_us: r for r in readings}
    rnd = random.Random(9)
    # The first 130 s arrive (shuffled); the allocation still runs: the intervals over by the
    # last whole minute reported are written, nothing after.
    first = [r for r in readings if r.at_us <= us(130)]
    rnd.shuffle(first)
    with runtime.uow() as s:
        store_readings(s, [(gpu_id, r) for r in first])
        rows = meter_allocation(s, alloc_id, pue=PUE)
    assert [(r.start_us, r.end_us) for r in rows] == [(us(20), us(60)), (us(60), us(120))]
    with runtime.sessions() as s:
        early = _ledger(s, alloc_id)
    assert [row[4] for row in early] == [
        _mj(at[us(60)]) - _mj(at[us(20)]),
        _mj(at[us(120)]) - _mj(at[us(60)]),
    ]
    # The rest arrive (a spool replayed: everything sent again, shuffled), the allocation ends at
    # T0 + 200 s, and it is metered twice: the early rows stand as written, none is written twice.
    again = list(readings)
    rnd.shuffle(again)
    with runtime.uow() as s:
        store_readings(s, [(gpu_id, r) for r in again])
        s.get_one(Allocation, alloc_id).released_at = T0 + timedelta(seconds=200)
    for _ in range(2):
        with runtime.uow() as s:
            meter_allocation(s, alloc_id, pue=PUE)
    with runtime.sessions() as s:
        ledger = _ledger(s, alloc_id)
        stored = s.scalar(select(func.count()).select_from(EnergyReading).where(EnergyReading.gpu_id == gpu_id))
        tenants = set(s.scalars(select(UsageRecord.tenant_id)))
    assert stored == len(readings) and tenants == {tenant_id}
    assert ledger[:2] == early
    assert [(r[1], r[2]) for r in ledger] == [
        (us(20), us(60)),
        (us(60), us(120)),
        (us(120), us(180)),
        (us(180), us(200)),
    ]
    assert sum(r[3] for r in ledger) == 180 * US_PER_S
    assert sum(r[4] for r in ledger) == _mj(at[us(200)]) - _mj(at[us(20)])
    assert all(r[5] == int((r[4] * PUE).to_integral_value()) for r in ledger)
    assert len({r[0] for r in ledger}) == 4


def test_redis_flushed_and_an_agent_offline_replaying_its_spool_lose_no_energy(
    client: TestClient, runtime: Runtime
) -> None:
    """Through the agent API: a node's GPU 0 runs a tenant's allocation for 20 minutes at 700 W,
    reporting every 5 s. Redis is flushed at minute 7 (every key of the control plane's), the agent
    is offline from minute 10 and replays its spool in batches at the end. The ledger, from the
    readings SQL kept, bills every millijoule once: 700 W x 1,200 s, 42 kJ a minute."""
    make_site(runtime)
    node = register_node(runtime, 1)
    tenant = make_tenant(runtime, "acme")
    t0 = time.time() // 60 * 60 - 1200  # 20 minutes ago, on a minute
    start = datetime.fromtimestamp(t0, UTC)
    with runtime.uow() as s:
        gpu = s.scalars(select(Gpu).where(Gpu.node_id == node.node_id, Gpu.index == 0)).one()
        wl = Workload(
            id=new_id("wl"),
            tenant_id=tenant.tenant_id,
            gpu_count=1,
            gpu_model="NVIDIA GB300",
            nvlink="none",
            priority="on_demand",
            command=["true"],
            env={},
            max_duration_s=3600,
        )
        s.add(wl)
        s.flush()
        alloc = Allocation(workload_id=wl.id, gpu_id=gpu.id, node_id=node.node_id, rank=0, epoch=1, created_at=start)
        s.add(alloc)
        s.flush()
        alloc_id = alloc.id
    running = {"workload_id": wl.id, "epoch": 1, "rank": 0, "phase": "running"}
    watts_mj = 700_000  # mJ per second

    def body(seq: int) -> dict[str, Any]:
        at = t0 + 5 * seq
        return {
            "protocol_version": PROTOCOL_VERSION,
            "seq": seq + 1,
            "sent_at": at,
            "gpus": [
                {"uuid": g.uuid, "index": g.index, "power_w": 700.0, "energy_mj": 5_000_000 + watts_mj * 5 * seq}
                for g in node.inventory.gpus
            ],
            "assignments": [running],
        }

    path = f"/v1/agent/nodes/{node.node_id}/reports"
    spool = []
    for seq in range(0, 241):  # t0 .. t0 + 1,200 s
        if seq == 84:  # minute 7: Redis loses everything
            keys = list(runtime.redis.scan_iter(f"{runtime.settings.redis_prefix}:*"))
            assert keys
            runtime.redis.delete(*keys)
        if seq >= 120:  # minute 10: offline, spooling
            spool.append(body(seq))
            continue
        r = client.post(path, json=body(seq), headers=node.headers)
        assert r.status_code == 200 and r.json()["accepted"], r.text
    for i in range(0, len(spool), MAX_BATCH_REPORTS):
        batch = {"protocol_version": PROTOCOL_VERSION, "reports": spool[i : i + MAX_BATCH_REPORTS]}
        r = client.post(f"{path}/batch", json=batch, headers=node.headers)
        assert r.status_code == 200 and all(x["accepted"] for x in r.json()["results"]), r.text
    with runtime.uow() as s:
        s.get_one(Allocation, alloc_id).released_at = start + timedelta(seconds=1200)
    with runtime.uow() as s:
        meter_allocation(s, alloc_id, pue=PUE)
    with runtime.sessions() as s:
        ledger = _ledger(s, alloc_id)
        per_gpu = s.scalar(select(func.count()).select_from(EnergyReading).where(EnergyReading.gpu_id == gpu.id))
    assert len(ledger) == 20 and all(r[4] == watts_mj * 60 for r in ledger)
    assert sum(r[4] for r in ledger) == watts_mj * 1200
    with runtime.sessions() as s:
        hourly = _hourly(s)
    assert sum(h[3] for h in hourly) == watts_mj * 1200 and sum(h[4] for h in hourly) == 20
    # Prometheus sees the same, per tenant: 1,200 GPU-seconds, 840 kJ IT (x the PUE at the facility).
    text = client.get("/metrics").text
    assert f'switchyard_metered_gpu_seconds_total{{tenant="{tenant.tenant_id}"}} 1200.0' in text
    assert f'switchyard_metered_energy_joules_total{{basis="it",tenant="{tenant.tenant_id}"}} 840000.0' in text
    assert per_gpu is not None and 21 <= per_gpu < 241  # a checkpoint a minute, not every report


def test_the_periodic_run_meters_every_allocation_of_the_site_once(runtime: Runtime) -> None:
    """``meter_sites`` (the task beat runs each minute): GPU 0 still running from T0 + 20 s, GPU 1
    released at T0 + 90 s, GPU 2 allocated at T0 + 1,000 s with no reading from T0 - 1 h to
    T0 + 1,100 s (the reading before its start is older than the run's window). Each
    gets exactly the rows ``meter_allocation`` computes for it alone, and a second run writes
    nothing."""
    _, gpu0, alloc0 = _setup(runtime)
    readings = _sim_readings(1300)
    with runtime.uow() as s:
        node_id = s.get_one(Gpu, gpu0).node_id
        gpu1, gpu2 = (s.scalars(select(Gpu.id).where(Gpu.node_id == node_id, Gpu.index == i)).one() for i in (1, 2))
        wl = s.get_one(Allocation, alloc0).workload_id
        a1 = Allocation(
            workload_id=wl,
            gpu_id=gpu1,
            node_id=node_id,
            rank=1,
            epoch=1,
            created_at=T0,
            released_at=T0 + timedelta(seconds=90),
        )
        a2 = Allocation(
            workload_id=wl,
            gpu_id=gpu2,
            node_id=node_id,
            rank=2,
            epoch=1,
            created_at=T0 + timedelta(seconds=1000),
            released_at=T0 + timedelta(seconds=1200),
        )
        s.add_all([a1, a2])
        s.flush()
        alloc1, alloc2 = a1.id, a2.id
        store_readings(s, [(gpu0, r) for r in readings if r.at_us <= us(300)])
        store_readings(s, [(gpu1, r) for r in readings if r.at_us <= us(300)])
        gap = [Reading(us(-3600), 0, 700.0), *(r for r in readings if r.at_us >= us(1100))]
        store_readings(s, [(gpu2, r) for r in gap])
    now = T0 + timedelta(seconds=1300)
    with runtime.uow() as s:
        written = meter_sites(s, now=now)
    assert sum(written.values()) == 5 + 2 + 4  # [20, 60) .. [240, 300); [0, 60), [60, 90); 1,000 .. 1,200
    with runtime.uow() as s:
        assert sum(meter_sites(s, now=now).values()) == 0
    with runtime.sessions() as s:
        (site_pue,) = s.scalars(select(Site.pue)).all()
    for alloc_id in (alloc0, alloc1, alloc2):
        with runtime.sessions() as s:
            alone = meter_allocation(s, alloc_id, pue=Decimal(str(site_pue)))  # computed, rolled back with the session
            booked = _ledger(s, alloc_id)
        assert [(u.key, u.start_us, u.end_us, u.gpu_us, u.it_mj, u.facility_mj) for u in alone] == booked
    assert {r[4] for r in booked} and all(r[4] > 0 for r in booked)
    # The hourly sums kept beside the ledger are the ledger's sums (rebuilt from it alone).
    with runtime.sessions() as s:
        kept = _hourly(s)
        rebuild_hourly(s)
        assert _hourly(s) == kept and sum(h[4] for h in kept) == 11
        total = s.execute(select(func.sum(UsageRecord.it_mj), func.sum(UsageRecord.gpu_us))).one()
        assert (sum(h[3] for h in kept), sum(h[2] for h in kept)) == tuple(total)


def test_a_checkpoint_while_the_database_is_down_is_refused_then_lands_on_retry(
    client: TestClient, runtime: Runtime
) -> None:
    """PostgreSQL stops taking connections (its own switch, every session cut). Reports inside a
    minute already checkpointed go on through Redis; the next minute's first report, whose
    readings must be durable before it is acknowledged, gets a 503 problem and is not recorded,
    and the agent's retry of that same report lands once the database is back: the minute's
    energy is all there. (SQLite is a file in this process, not a server that can go away.)"""
    import psycopg
    from testenv import PG_ADMIN_URL

    url = runtime.settings.database_url
    if not url.startswith("postgresql"):
        pytest.skip("an embedded SQLite database cannot be down while its process runs")
    make_site(runtime)
    node = register_node(runtime, 1)
    t0 = time.time() // 60 * 60 - 120
    path = f"/v1/agent/nodes/{node.node_id}/reports"

    def body(seq: int, at: float) -> dict[str, Any]:
        gpus = [
            {"uuid": g.uuid, "index": g.index, "power_w": 500.0, "energy_mj": 500_000 * int(at - t0)}
            for g in node.inventory.gpus
        ]
        return {"protocol_version": PROTOCOL_VERSION, "seq": seq, "sent_at": at, "gpus": gpus}

    assert client.post(path, json=body(1, t0), headers=node.headers).status_code == 200
    name = url.rsplit("/", 1)[1]
    admin = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
    try:
        inside = client.post(path, json=body(2, t0 + 30), headers=node.headers)
        assert inside.status_code == 200 and inside.json()["accepted"], inside.text
        down = client.post(path, json=body(3, t0 + 60), headers=node.headers)
        assert down.status_code == 503 and down.headers["content-type"].startswith("application/problem+json")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    retry = client.post(path, json=body(3, t0 + 60), headers=node.headers)
    assert retry.status_code == 200 and retry.json() == {**retry.json(), "accepted": True, "duplicate": False}
    with runtime.sessions() as s:
        gpu = s.scalars(select(Gpu.id).where(Gpu.node_id == node.node_id, Gpu.index == 0)).one()
        points = [
            (at, mj)
            for at, mj in s.execute(
                select(EnergyReading.at_us, EnergyReading.energy_mj)
                .where(EnergyReading.gpu_id == gpu)
                .order_by(EnergyReading.at_us)
            )
        ]
    assert points == [(round(t0 * US_PER_S), 0), (round((t0 + 60) * US_PER_S), 30_000_000)]


def test_two_bookings_of_the_same_rows_at_once_count_them_once(runtime: Runtime) -> None:
    """Two metering transactions book the same allocation's rows concurrently (two workers, a
    run overlapping the next): the second waits for the first (PostgreSQL's advisory lock,
    SQLite's single writer), then finds the rows booked. The ledger and the hourly sums hold them
    once."""
    import threading

    _, gpu_id, alloc_id = _setup(runtime)
    readings = _sim_readings(300)
    with runtime.uow() as s:
        store_readings(s, [(gpu_id, r) for r in readings])
        s.get_one(Allocation, alloc_id).released_at = T0 + timedelta(seconds=200)
    second: list[int] = []
    started = threading.Event()
    with runtime.sessions() as s:
        owner = Owner(
            *s.execute(
                select(Workload.tenant_id, Workload.id, Workload.priority, Workload.gpu_model).join(
                    Allocation, Allocation.workload_id == Workload.id
                )
            ).one()
        )

    def other(rows: list[UsageRow]) -> None:
        started.set()
        with runtime.uow() as s2:
            second.append(book(s2, [(owner, rows)]))

    with runtime.uow() as s:
        rows = meter_allocation(s, alloc_id, pue=PUE)
        t = threading.Thread(target=other, args=(rows,))
        t.start()
        started.wait()
        t.join(timeout=1.0)
        assert t.is_alive()  # waiting on the first booking's transaction
    t.join(timeout=30)
    assert not t.is_alive() and second == [0]
    with runtime.sessions() as s:
        assert len(_ledger(s, alloc_id)) == len(rows) == 4
        assert sum(h[4] for h in _hourly(s)) == 4


def test_a_driver_reload_mid_allocation_through_the_api_loses_nothing(client: TestClient, runtime: Runtime) -> None:
    """A GPU at a steady 700 W reports every 5 s for 10 minutes; the driver reloads at 302.5 s and
    its counter restarts from 0. Only each minute's first report is a checkpoint, so the reset
    falls in [300 s, 360 s): the counter holds 57.5 s of it, the power samples all 60 s, and the
    span is filled from them and flagged estimated. The ledger bills 700 W x 600 s exactly."""
    make_site(runtime)
    node = register_node(runtime, 1)
    tenant = make_tenant(runtime, "acme")
    t0 = time.time() // 60 * 60 - 600
    start = datetime.fromtimestamp(t0, UTC)
    with runtime.uow() as s:
        gpu = s.scalars(select(Gpu).where(Gpu.node_id == node.node_id, Gpu.index == 0)).one()
        wl = Workload(
            id=new_id("wl"),
            tenant_id=tenant.tenant_id,
            gpu_count=1,
            gpu_model="NVIDIA GB300",
            nvlink="none",
            priority="on_demand",
            command=["true"],
            env={},
            max_duration_s=3600,
        )
        s.add(wl)
        s.flush()
        alloc = Allocation(workload_id=wl.id, gpu_id=gpu.id, node_id=node.node_id, rank=0, epoch=1, created_at=start)
        s.add(alloc)
        s.flush()
        alloc_id = alloc.id
    running = {"workload_id": wl.id, "epoch": 1, "rank": 0, "phase": "running"}
    path = f"/v1/agent/nodes/{node.node_id}/reports"
    for seq in range(0, 121):
        at = 5 * seq
        energy = 700_000 * at if at < 302.5 else round(700_000 * (at - 302.5))
        body = {
            "protocol_version": PROTOCOL_VERSION,
            "seq": seq + 1,
            "sent_at": t0 + at,
            "gpus": [
                {"uuid": g.uuid, "index": g.index, "power_w": 700.0, "energy_mj": energy} for g in node.inventory.gpus
            ],
            "assignments": [running],
        }
        r = client.post(path, json=body, headers=node.headers)
        assert r.status_code == 200 and r.json()["accepted"], r.text
    with runtime.uow() as s:
        s.get_one(Allocation, alloc_id).released_at = start + timedelta(seconds=600)
    with runtime.uow() as s:
        meter_allocation(s, alloc_id, pue=PUE)
    with runtime.sessions() as s:
        ledger = _ledger(s, alloc_id)
        flags = s.scalars(
            select(UsageRecord.estimated).where(UsageRecord.allocation_id == alloc_id).order_by(UsageRecord.start_us)
        ).all()
    assert len(ledger) == 10 and sum(r[4] for r in ledger) == 700_000 * 600
    assert flags == [False] * 5 + [True] + [False] * 4
