"""Placements per second committed to PostgreSQL, end to end, on the campus-300mw fleet.

A fresh PostgreSQL database holds the whole campus (1,700 racks, 30,600 nodes, 122,400 GPUs)
and 10,000 pending workloads drawn (seeded) from the day's mix. One scheduler pass, exactly as
the scheduler process runs it (`run_pass`): read the queue, build the snapshot from the
database, decide, and commit every allocation, rank, state transition and fence in one
transaction. Side by side in the same run, on the same database state: the naive first-fit
baseline through the same read and commit path (rolled back, so both start equal). Writes
bench/results/scheduler_commit.json.

    .venv/bin/python bench/bench_scheduler_commit.py [--pending 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--site", default="campus-300mw")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scheduler_commit.json")
    args = parser.parse_args()
    from sqlalchemy import insert
    from testenv import PEPPER, REDIS_URL, pg_database

    from controlplane.config import Settings
    from controlplane.domain.ids import new_id
    from controlplane.runtime import build_runtime
    from controlplane.scenarios import day_workloads_file, sites_file
    from controlplane.services import admin
    from controlplane.store.db import make_engine, make_session_factory, transaction
    from controlplane.store.migrate import upgrade
    from controlplane.store.models import Gpu, Node, Rack, Tenant, Workload

    name = f"switchyard_bench_{os.getpid()}"
    url = pg_database(name, drop=False)
    try:
        upgrade(url)
        engine = make_engine(url)
        t0 = time.perf_counter()
        spec = admin.load_scenario(sites_file(), args.site)
        with transaction(make_session_factory(engine)) as session:
            site = admin.create_site(session, name=args.site, spec=spec)
            site_id = site.id
            racks = [(r.id, r.fabric_cluster_uuid) for r in session.query(Rack).order_by(Rack.name)]
        per_rack, per_node = spec["racks"]["nodes_per_rack"], spec["racks"]["gpus_per_node"]
        now = datetime.now(UTC)
        nodes, gpus = [], []
        for rack_id, cluster in racks:
            for t in range(per_rack):
                node_id = new_id("node")
                nodes.append(
                    {
                        "id": node_id,
                        "site_id": site_id,
                        "rack_id": rack_id,
                        "hostname": f"{rack_id}-t{t:02d}",
                        "address": "127.0.0.1",
                        "backend": "sim",
                        "driver_version": "580.173.02",
                        "status": "ready",
                        "status_reason": "",
                        "status_changed_at": now,
                        "cordoned": False,
                        "draining": False,
                        "cordon_reason": "",
                        "nvlink_domain": f"{cluster}.32766",
                        "generation": 1,
                        "registered_at": now,
                    }
                )
                for i in range(per_node):
                    gpus.append(
                        {
                            "id": new_id("gpu"),
                            "node_id": node_id,
                            "index": i,
                            "uuid": f"GPU-{uuid.uuid4()}",
                            "model": "NVIDIA GB300",
                            "serial": None,
                            "pci_bus_id": None,
                            "memory_total_mib": 284208,
                            "power_limit_w": 1400.0,
                            "fabric_cluster_uuid": cluster,
                            "fabric_clique_id": 32766,
                            "fabric_state": "completed",
                            "health": "healthy",
                            "health_reason": "",
                            "health_action": "none",
                            "present": True,
                        }
                    )
        rows = [json.loads(line) for line in day_workloads_file().read_text().splitlines() if line.strip()]
        rng = random.Random(7)
        tenants = sorted({r["tenant"] for r in rows})
        tenant_ids = {t: new_id("tnt") for t in tenants}
        workloads = []
        for n in range(args.pending):
            r = rng.choice(rows)
            workloads.append(
                {
                    "id": new_id("wl"),
                    "tenant_id": tenant_ids[r["tenant"]],
                    "name": r["id"],
                    "gpu_count": r["gpus"],
                    "gpu_model": "NVIDIA GB300",
                    "nvlink": r["nvlink"],
                    "priority": r["priority"],
                    "command": ["train"],
                    "env": {},
                    "max_duration_s": int(r["duration_s"]),
                    "sim_utilization": 0.9,
                    "state": "pending",
                    "reason": "waiting for the scheduler",
                    "idempotency_key": None,
                    "request_hash": None,
                    "epoch": None,
                    "master_port": 29500,
                    "created_at": now - timedelta(seconds=args.pending - n),
                    "updated_at": now,
                }
            )
        with engine.begin() as conn:
            conn.execute(insert(Node), nodes)
            conn.execute(insert(Gpu), gpus)
            conn.execute(
                insert(Tenant),
                [
                    {
                        "id": tenant_ids[t],
                        "name": t,
                        "created_at": now,
                        "reserved_gpus": 1024 if t == "acme-ai" else 0,
                        "max_gpus": None,
                        "gpu_hours_limit": None,
                        "spend_cap_usd": None,
                        "over_quota": "hold",
                        "price_usd_per_gpu_hour": Decimal("3.00"),
                    }
                    for t in tenants
                ],
            )
            conn.execute(insert(Workload), workloads)
        setup_s = time.perf_counter() - t0
        engine.dispose()

        settings = Settings(
            database_url=url, redis_url=REDIS_URL, redis_prefix=f"sy-bench-{os.getpid()}", pepper=PEPPER
        )
        runtime = build_runtime(settings)
        baseline = one_pass(runtime, baseline=True, commit=False)
        ours_dry = one_pass(runtime, baseline=False, commit=False)
        ours = one_pass(runtime, baseline=False, commit=True)
        runtime.close()
    finally:
        pg_database(name, drop=True)
    result = {
        "bench": "scheduler_commit",
        "site": args.site,
        "gpus": len(gpus),
        "nodes": len(nodes),
        "pending": args.pending,
        "setup_s": round(setup_s, 1),
        "ours_committed": ours,
        "ours_flushed_then_rolled_back": ours_dry,
        "first_fit_flushed_then_rolled_back": baseline,
        "target_placements_per_s": 1000,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = args.out
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


def one_pass(runtime: Any, *, baseline: bool, commit: bool) -> dict[str, Any]:
    """The scheduler's pass, timed by phase; ``commit=False`` flushes every row and rolls back."""
    from sqlalchemy import select

    from controlplane.domain.epoch import PlacementEpoch
    from controlplane.scheduling.baseline import first_fit
    from controlplane.scheduling.core import schedule
    from controlplane.scheduling.snapshot import Decision, Placement
    from controlplane.services.scheduler import build as snapshots
    from controlplane.services.scheduler import commit as placement
    from controlplane.store.models import Site

    session = runtime.sessions()
    timings: dict[str, float] = {}
    start = time.perf_counter()
    try:
        session.begin()
        mark = time.perf_counter()
        queue = snapshots.pending_queue(session)
        site = session.scalars(select(Site)).one()
        snap = snapshots.build_snapshot(session, site=site)
        timings["read_s"] = time.perf_counter() - mark
        mark = time.perf_counter()
        decisions: list[Decision] = list(first_fit(snap, queue)) if baseline else schedule(snap, queue)
        timings["decide_s"] = time.perf_counter() - mark
        mark = time.perf_counter()
        result = placement.commit(
            session, decisions=decisions, epoch=PlacementEpoch.of(1, 1).value, site=site, snapshot=snap
        )
        session.flush()
        if commit:
            session.commit()
        timings["write_s"] = time.perf_counter() - mark
    finally:
        if not commit:
            session.rollback()
        session.close()
    elapsed = time.perf_counter() - start
    placed = sum(isinstance(d, Placement) for d in decisions)
    return {
        "placed": placed,
        "gpus_placed": sum(d.gpu_count for d in decisions if isinstance(d, Placement)),
        "committed": result.placed,
        "elapsed_s": round(elapsed, 3),
        "placements_per_s": round(placed / elapsed),
        **{k: round(v, 3) for k, v in timings.items()},
    }


if __name__ == "__main__":
    sys.exit(main())
