"""Submit the demo workloads and follow the site until the run is over.

On a terminal the whole table is redrawn every second; otherwise (a pipe, a log file, --no-table)
each workload state change is one line, with a fleet summary every 15 s.
"""

from __future__ import annotations

from typing import Any

import httpx

from controlplane.processes.demo.clock import RunClock
from controlplane.processes.demo.console import Console
from controlplane.processes.demo.supervisor import Supervisor
from controlplane.processes.demo.table import render, summarise
from controlplane.processes.demo.workloads import DEMO_WORKLOADS, DemoWorkload, all_ended

SUMMARY_EVERY_S = 15.0


def submit(http: httpx.Client, tenant: dict[str, str], clock: RunClock, console: Console) -> dict[str, DemoWorkload]:
    submitted: dict[str, DemoWorkload] = {}
    for wl in sorted(DEMO_WORKLOADS, key=lambda w: w.delay_s):
        if clock.over() or (wl.delay_s and clock.pause(wl.delay_s)):
            break
        r = http.post("/v1/workloads", json=wl.body(), headers={**tenant, "Idempotency-Key": f"demo-{wl.name}"})
        r.raise_for_status()
        submitted[r.json()["id"]] = wl
        console.say(f"submitted {wl.name}: {wl.gpus} GPUs -> {r.json()['id']}")
    return submitted


def watch(
    http: httpx.Client,
    *,
    operator: dict[str, str],
    tenant: dict[str, str],
    submitted: dict[str, DemoWorkload],
    until_done: bool,
    table: bool,
    clock: RunClock,
    supervisor: Supervisor,
    console: Console,
) -> dict[str, str]:
    """Each workload's last seen state, once the run is over (or, with until_done, all ended)."""
    seen: dict[str, str] = {}
    last_summary = -SUMMARY_EVERY_S
    while not clock.over():
        supervisor.check()
        nodes: list[dict[str, Any]] = http.get("/v1/operator/nodes", headers=operator).json()
        page = http.get("/v1/workloads", params={"limit": 200}, headers=tenant).json()
        workloads: list[dict[str, Any]] = page["items"]
        if table:
            console.write("\x1b[H\x1b[2J" + render(nodes, workloads) + "\n(Ctrl-C stops everything)\n")
        for w in workloads:
            if seen.get(w["id"]) != w["state"]:
                seen[w["id"]] = w["state"]
                if not table:
                    name = w["name"] or w["id"]
                    console.say(f"{clock.elapsed():6.1f}s  {name:<22} {w['state']:<10} {w['reason']}")
        if not table and clock.elapsed() - last_summary >= SUMMARY_EVERY_S:
            last_summary = clock.elapsed()
            console.say(summarise(nodes))
        if until_done and all_ended(submitted, seen):
            break
        clock.pause(1.0)
    return seen
