"""Usage-ledger ingest into PostgreSQL: rows per second on one client core (issue 11's target:
>= 20,000/s; a 300 MW campus at 1-minute intervals writes ~2,000/s).

A fresh PostgreSQL database, migrated. Rows as ``services/metering/record.meter_allocation``
writes them (``usage.usage_rows`` from a simulated counter curve per GPU, 1-minute intervals,
keys from their source), inserted through ``store.bulk.insert_ignoring`` (``INSERT ... ON
CONFLICT (key) DO NOTHING``), ``--batch`` rows a statement, one transaction per statement. Side
by side in the same run: the same rows again (every one a duplicate: the cost of a replayed
spool), the product's own write path (``record.book``: RETURNING the new rows, added to the
tenants' hourly sums in the same transaction), and computing the rows alone (no database).
Writes bench/results/ledger_ingest.json.

    .venv/bin/python bench/bench_ledger.py [--gpus 500 --minutes 120 --batch 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpus", type=int, default=500)
    ap.add_argument("--minutes", type=int, default=120)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ledger_ingest.json")
    args = ap.parse_args()
    from testenv import pg_database

    from controlplane.metering.counters import US_PER_S, Reading, energy_curve
    from controlplane.metering.usage import UsageRow, usage_rows
    from controlplane.services.metering.record import Owner, book
    from controlplane.store.bulk import insert_ignoring, table_of
    from controlplane.store.db import make_engine, make_session_factory, transaction
    from controlplane.store.migrate import upgrade
    from controlplane.store.models import UsageRecord

    t0_us = 1_764_547_200 * US_PER_S  # 2025-12-01 00:00 UTC
    span_us = args.minutes * 60 * US_PER_S

    # A reading every 5 s per GPU at 600-1,400 W (a deterministic pattern per GPU), made before
    # the clock starts: what the meter reads from SQL.
    per_gpu: list[list[Reading]] = []
    for g in range(args.gpus):
        readings, e = [], 0
        for k in range(span_us // (5 * US_PER_S) + 1):
            readings.append(Reading(t0_us + k * 5 * US_PER_S, e, None))
            e += (600 + (g * 37 + k * 11) % 800) * 5000
        per_gpu.append(readings)

    def compute() -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for g, readings in enumerate(per_gpu):
            points = energy_curve(readings)
            for u in usage_rows(
                g + 1, f"gpu-{g:05d}", points, t0_us, t0_us + span_us, interval_us=60 * US_PER_S, pue=Decimal("1.25")
            ):
                records.append(
                    {
                        "key": u.key,
                        "tenant_id": f"tn-{g % 7}",
                        "workload_id": f"wl-{g}",
                        "priority": "on_demand",
                        "gpu_model": "NVIDIA GB300",
                        "allocation_id": u.allocation_id,
                        "gpu_id": u.gpu_id,
                        "start_us": u.start_us,
                        "end_us": u.end_us,
                        "gpu_us": u.gpu_us,
                        "it_mj": u.it_mj,
                        "facility_mj": u.facility_mj,
                        "estimated": u.estimated,
                    }
                )
        return records

    c0 = time.perf_counter()
    records = compute()
    compute_s = time.perf_counter() - c0

    name = f"switchyard_bench_ledger_{os.getpid()}"
    url = pg_database(name, drop=False)
    try:
        upgrade(url)
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        table = table_of(UsageRecord)

        def ingest() -> tuple[float, float]:
            wall, cpu = time.perf_counter(), time.process_time()
            for i in range(0, len(records), args.batch):
                with transaction(sessions) as session:
                    insert_ignoring(session, table, records[i : i + args.batch], ["key"])
            return time.perf_counter() - wall, time.process_time() - cpu

        first_wall, first_cpu = ingest()
        again_wall, again_cpu = ingest()

        # The product's write path: ``record.book`` per allocation (rows inserted with RETURNING,
        # the new ones added to the tenant's hourly sums), the same rows under other keys.
        by_gpu: dict[str, list[UsageRow]] = {}
        for rec in records:
            by_gpu.setdefault(rec["gpu_id"], []).append(
                UsageRow(
                    "b" + rec["key"],
                    rec["allocation_id"],
                    rec["gpu_id"],
                    rec["start_us"],
                    rec["end_us"],
                    rec["gpu_us"],
                    rec["it_mj"],
                    rec["facility_mj"],
                    rec["estimated"],
                )
            )
        groups = list(by_gpu.values())
        owner = Owner("tn-0", "wl-0", "on_demand", "NVIDIA GB300")
        per_tx = max(1, args.batch // max(1, len(groups[0])))
        wall = time.perf_counter()
        booked = 0
        for i in range(0, len(groups), per_tx):
            with transaction(sessions) as session:
                booked += book(session, [(owner, rows) for rows in groups[i : i + per_tx]])
        book_wall = time.perf_counter() - wall
        assert booked == len(records)
        with engine.connect() as conn:
            from sqlalchemy import func, select

            stored = conn.execute(select(func.count()).select_from(table)).scalar_one()
        engine.dispose()
    finally:
        pg_database(name, drop=True)
    n = len(records)
    assert stored == 2 * n, (stored, n)
    result = {
        "bench": "ledger_ingest",
        "rows": n,
        "gpus": args.gpus,
        "minutes": args.minutes,
        "rows_per_statement": args.batch,
        "insert_rows_per_s": round(n / first_wall),
        "insert_client_cpu_s": round(first_cpu, 2),
        "insert_rows_per_client_cpu_s": round(n / first_cpu) if first_cpu else None,
        "replayed_duplicates_rows_per_s": round(n / again_wall),
        "booked_rows_per_s": round(n / book_wall),
        "compute_rows_per_s": round(n / compute_s),
        "target_rows_per_s": 20_000,
        "campus_300mw_rows_per_s": round(122_400 / 60),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "note": "one client process, one core; PostgreSQL on the same machine (its own process)",
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
