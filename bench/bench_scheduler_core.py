"""Placement decisions per second of the pure scheduling core, side by side with a naive first fit.

Fleet: ``campus-300mw`` from sites.json (1,700 NVL72 racks x 18 nodes x 4 GPUs = 122,400 GPUs,
its power figures and a 142 kW cap per rack). Queue: 10,000 pending workloads drawn (seeded) from
``day-workloads.jsonl``'s mix of sizes, NVLink needs, classes and tenants. Two starting fleets:
empty, and ~70% full (filled by placing the same mix, then releasing random work, so the free
space is fragmented as a live fleet's is). Both schedulers get the same snapshot and queue in the
same run. Timed separately: building the snapshot from plain rows (what the shell does after its
queries), the core's per-pass index build, and its decisions. Writes
bench/results/scheduler_core.json.

    .venv/bin/python bench/bench_scheduler_core.py [--pending 10000] [--baseline-budget-s 40]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from collections import Counter
from dataclasses import asdict
from decimal import Decimal
from pathlib import Path
from typing import Any

from controlplane.domain.enums import NvlinkPolicy, PriorityClass
from controlplane.domain.site import SiteSpec
from controlplane.power.model import PowerModel
from controlplane.scenarios import day_workloads_file, sites_file
from controlplane.scheduling.baseline import FirstFit, first_fit
from controlplane.scheduling.core import SchedulingPass, queue_order
from controlplane.scheduling.fragmentation import fragmentation
from controlplane.scheduling.snapshot import (
    Decision,
    FleetSnapshot,
    GpuSlot,
    NodeView,
    Placement,
    Preempt,
    RunningWorkload,
    ShedMining,
    TenantPolicy,
    Unplaced,
    WorkloadRequest,
)

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = day_workloads_file()
GB300 = "NVIDIA GB300"


def fleet_rows(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Plain rows, as the shell would read them from the database."""
    racks = spec["racks"]
    rows = []
    for r in range(racks["count"]):
        for t in range(racks["nodes_per_rack"]):
            node_id = f"r{r:04d}-t{t:02d}"
            rows.append(
                {
                    "id": node_id,
                    "domain": f"fabric-{r:04d}.0",
                    "rack": f"r{r:04d}",
                    "status": "",
                    "gpus": [
                        {"id": f"{node_id}-g{i}", "index": i, "model": racks["gpu_model"], "healthy": True}
                        for i in range(racks["gpus_per_node"])
                    ],
                }
            )
    return rows


def build_snapshot(
    rows: list[dict[str, Any]],
    running: list[RunningWorkload],
    power: PowerModel,
    tenants: dict[str, TenantPolicy],
) -> FleetSnapshot:
    allocated = {g for run in running for _, g in run.gpus}
    nodes = tuple(
        NodeView(
            node_id=row["id"],
            domain=row["domain"],
            unschedulable=row["status"],
            gpus=tuple(
                GpuSlot(g["id"], g["index"], g["model"], g["healthy"], g["id"] in allocated) for g in row["gpus"]
            ),
            rack_id=row["rack"],
        )
        for row in rows
    )
    return FleetSnapshot(nodes=nodes, running=tuple(running), tenants=tenants, power=power, now=86_400.0)


def power_model(spec: dict[str, Any]) -> PowerModel:
    site = SiteSpec.parse(spec)
    caps = {f"r{r:04d}": site.racks.rack_power_capacity_kw * 1e3 for r in range(site.racks.count)}
    return PowerModel.for_site(site, caps)


def draw_queue(mix: list[dict[str, Any]], n: int, rng: random.Random, prefix: str) -> list[WorkloadRequest]:
    out = []
    for i in range(n):
        w = rng.choice(mix)
        out.append(
            WorkloadRequest(
                workload_id=f"{prefix}{i:05d}",
                gpu_count=w["gpus"],
                gpu_model=GB300,
                nvlink=NvlinkPolicy(w["nvlink"]),
                priority=PriorityClass(w["priority"]),
                submitted_at=float(i),
                tenant_id=w["tenant"],
                max_duration_s=float(w["duration_s"]),
                price_usd_per_gpu_hour=Decimal(str(w["price_usd_per_gpu_hour"])),
            )
        )
    return out


def fill(
    rows: list[dict[str, Any]], mix: list[dict[str, Any]], power: PowerModel, rng: random.Random, target: float
) -> list[RunningWorkload]:
    """Running work covering ~``target`` of the GPUs, fragmented: place to ~85%, release at random."""
    total = sum(len(r["gpus"]) for r in rows)
    snap = build_snapshot(rows, [], power, {})
    queue = draw_queue(mix, 14_000, rng, "fill-")
    by_id = {w.workload_id: w for w in queue}
    placed = [d for d in SchedulingPass(snap).run(queue) if isinstance(d, Placement)]
    rng.shuffle(placed)
    used = sum(p.gpu_count for p in placed)
    while used > target * total:
        used -= placed.pop().gpu_count
    # The fill's queue sort placed reserved and on_demand first; running work gets the day's class
    # mix back (tenant and class of a random workload of the same size).
    same_size: dict[int, list[dict[str, Any]]] = {}
    for w in mix:
        same_size.setdefault(w["gpus"], []).append(w)
    labels = [rng.choice(same_size[by_id[p.workload_id].gpu_count]) for p in placed]
    return [
        RunningWorkload(
            workload_id=p.workload_id,
            tenant_id=labels[i]["tenant"],
            priority=PriorityClass(labels[i]["priority"]),
            gpus=tuple((r.node_id, g) for r in p.ranks for g in r.gpu_ids),
            started_at=float(i),
            gpu_model=GB300,
        )
        for i, p in enumerate(placed)
    ]


def summarise(decisions: list[Decision] | list[Placement | Unplaced]) -> dict[str, int]:
    kinds = Counter(type(d).__name__ for d in decisions)
    return {
        "placed": kinds[Placement.__name__],
        "pending": kinds[Unplaced.__name__],
        "preempt": kinds[Preempt.__name__],
        "shed_mining": kinds[ShedMining.__name__],
    }


def run_case(
    name: str,
    rows: list[dict[str, Any]],
    running: list[RunningWorkload],
    queue: list[WorkloadRequest],
    power: PowerModel,
    tenants: dict[str, TenantPolicy],
    baseline_budget_s: float,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    snap = build_snapshot(rows, running, power, tenants)
    t_snapshot = time.perf_counter() - t0
    total_gpus = sum(len(n.gpus) for n in snap.nodes)
    allocated = sum(g.allocated for n in snap.nodes for g in n.gpus)

    t0 = time.perf_counter()
    scheduling_pass = SchedulingPass(snap)
    t_index = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = scheduling_pass.run(queue)
    t_decide = time.perf_counter() - t0
    ours_placed = [d for d in ours if isinstance(d, Placement)]

    # The baseline gets a time budget: a prefix of the (sorted) queue if it cannot finish.
    t0 = time.perf_counter()
    baseline = FirstFit(snap)
    t_base_index = time.perf_counter() - t0
    done: list[Placement | Unplaced] = []
    t0 = time.perf_counter()
    for i, req in enumerate(queue_order(queue)):
        done.append(baseline.decide(req))
        if i % 100 == 99 and time.perf_counter() - t0 > baseline_budget_s:
            break
    t_base = time.perf_counter() - t0
    base_placed = [d for d in done if isinstance(d, Placement)]

    # Packing compared where it shows: both place a prefix of the sorted queue asking for about
    # half the free GPUs, then the free space left is measured.
    free = total_gpus - allocated
    prefix: list[WorkloadRequest] = []
    asked = 0
    for req in queue_order(queue, snap):
        if asked >= free // 2:
            break
        prefix.append(req)
        asked += req.gpu_count
    half_ours = [d for d in SchedulingPass(snap).run(prefix) if isinstance(d, Placement)]
    half_base = [d for d in first_fit(snap, prefix) if isinstance(d, Placement)]

    result = {
        "case": name,
        "gpus": total_gpus,
        "allocated_at_start": allocated,
        "running_at_start": len(running),
        "pending": len(queue),
        "snapshot_build_s": round(t_snapshot, 4),
        "ours": {
            "index_build_s": round(t_index, 4),
            "decide_s": round(t_decide, 4),
            "decisions_per_s": round(len(queue) / t_decide),
            "decisions_per_s_incl_index": round(len(queue) / (t_decide + t_index)),
            **summarise(ours),
            "fragmentation_before": asdict(fragmentation(snap)),
            "gpus_placed": sum(p.gpu_count for p in ours_placed),
            "fragmentation_after": asdict(fragmentation(snap, ours_placed)),
            "half_fill": {
                "placed": len(half_ours),
                "gpus_placed": sum(p.gpu_count for p in half_ours),
                **asdict(fragmentation(snap, half_ours)),
            },
        },
        "baseline_first_fit": {
            "index_build_s": round(t_base_index, 4),
            "decided": len(done),
            "decide_s": round(t_base, 4),
            "decisions_per_s": round(len(done) / t_base) if t_base else None,
            "complete": len(done) == len(queue),
            **summarise(done),
            "gpus_placed": sum(p.gpu_count for p in base_placed),
            "fragmentation_after": asdict(fragmentation(snap, base_placed)),
            "half_fill": {
                "placed": len(half_base),
                "gpus_placed": sum(p.gpu_count for p in half_base),
                **asdict(fragmentation(snap, half_base)),
            },
        },
    }
    return result


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pending", type=int, default=10_000)
    ap.add_argument("--fill", type=float, default=0.70)
    ap.add_argument("--baseline-budget-s", type=float, default=40.0)
    ap.add_argument("--workloads", type=Path, default=WORKLOADS)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    spec = json.loads(Path(sites_file()).read_text())["campus-300mw"]
    mix = [json.loads(line) for line in args.workloads.read_text().splitlines() if line.strip()]
    rows = fleet_rows(spec)
    power = power_model(spec)
    scale = spec["racks"]["count"] / 64  # acme-ai's 1,024-GPU reservation on site-18mw, scaled to the campus
    tenants = {"acme-ai": TenantPolicy("acme-ai", reserved_gpus=int(1024 * scale))}

    rng = random.Random(args.seed)
    results = []
    for name, target in (("empty", 0.0), (f"{round(args.fill * 100)}% full", args.fill)):
        running = fill(rows, mix, power, rng, target) if target else []
        queue = draw_queue(mix, args.pending, random.Random(args.seed + 1), "w")
        res = run_case(name, rows, running, queue, power, tenants, args.baseline_budget_s)
        results.append(res)
        o, b = res["ours"], res["baseline_first_fit"]
        print(
            f"{name:>9}: snapshot {res['snapshot_build_s']:.2f} s | ours: index {o['index_build_s']:.3f} s, "
            f"{o['decisions_per_s']:,} decisions/s ({o['decisions_per_s_incl_index']:,} incl. index), "
            f"placed {o['placed']} ({o['gpus_placed']} GPUs), preempt {o['preempt']}, "
            f"half fill: {o['half_fill']['gpus_placed']} GPUs placed, "
            f"{o['half_fill']['whole_free_domains']} whole free domains, "
            f"{o['half_fill']['outside_whole_nodes']:.3f} free outside whole nodes | "
            f"first fit: {b['decisions_per_s']:,} decisions/s over {b['decided']}, placed {b['placed']} "
            f"({b['gpus_placed']} GPUs), half fill: {b['half_fill']['gpus_placed']} GPUs placed, "
            f"{b['half_fill']['whole_free_domains']} whole free domains, "
            f"{b['half_fill']['outside_whole_nodes']:.3f} free outside whole nodes"
        )
    out = {
        "bench": "scheduler_core",
        "site": "campus-300mw",
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "processor": platform.processor() or platform.platform(),
        "seed": args.seed,
        "cases": results,
    }
    path = ROOT / "bench" / "results" / "scheduler_core.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
