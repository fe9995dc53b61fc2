"""The demo's live table, rendered from the operator and tenant APIs' JSON."""

from __future__ import annotations

from collections import Counter
from typing import Any

_CELL = {
    "allocated": "\x1b[32mA\x1b[0m",
    "free": "\x1b[37m.\x1b[0m",
    "releasing": "\x1b[33mr\x1b[0m",
    "cordoned": "\x1b[35mc\x1b[0m",
    "faulty": "\x1b[31mX\x1b[0m",
    "unreachable": "\x1b[31m?\x1b[0m",
    "lost": "\x1b[31m-\x1b[0m",
}


def _gpu_cell(gpu: dict[str, Any]) -> str:
    t = gpu.get("telemetry") or {}
    power = t.get("power_w")
    temp = t.get("temperature_gpu_c")
    util = t.get("utilization_gpu_pct")
    text = f"{power:5.0f}W {temp:3.0f}C {util:3.0f}%" if None not in (power, temp, util) else " " * 15
    return f"{_CELL.get(gpu['state'], '?')} {text}"


def summarise(nodes: list[dict[str, Any]]) -> str:
    states = Counter(g["state"] for n in nodes for g in n["gpus"])
    power_w = sum((g.get("telemetry") or {}).get("power_w", 0.0) for n in nodes for g in n["gpus"])
    parts = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
    return f"GPUs: {parts} | GPU power {power_w / 1000:.1f} kW | {len(nodes)} nodes"


def render(nodes: list[dict[str, Any]], workloads: list[dict[str, Any]]) -> str:
    lines = [f"Switchyard demo  {summarise(nodes)}", ""]
    for node in nodes:
        status = "" if node["status"] == "ready" else f" [{node['status']}]"
        cells = "  ".join(_gpu_cell(g) for g in sorted(node["gpus"], key=lambda g: g["index"]))
        lines.append(f"{node['hostname']:<18}{status} {cells}")
    lines += ["", f"{'WORKLOAD':<22} {'GPUS':>4} {'PRIORITY':<9} {'STATE':<10} REASON"]
    for w in sorted(workloads, key=lambda w: w["id"]):
        name = (w["name"] or w["id"])[:22]
        lines.append(f"{name:<22} {w['gpus']:>4} {w['priority']:<9} {w['state']:<10} {w['reason'][:70]}")
    lines.append("\nA allocated  . free  r releasing  c cordoned  X faulty  ? unreachable")
    return "\n".join(lines)
