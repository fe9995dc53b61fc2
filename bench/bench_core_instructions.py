"""Instructions the scheduling core spends on one campus pass, counted by callgrind.

Wall-clock rates on this shared 2-core machine move by 20% from one run to the next; instruction
counts do not depend on the load. This runs the pass of ``bench_scheduler_core.py`` (campus-300mw,
10,000 pending, empty and 70% full) under ``valgrind --tool=callgrind`` with instrumentation on
only while the core builds its index ("init") or decides ("run"), with a fixed hash seed, for the
tree given (default: this one). Compare two trees in one run, e.g. before and after a change:

    git worktree add /tmp/before <commit>
    .venv/bin/python bench/bench_core_instructions.py --tree . --tree /tmp/before

Writes bench/results/core_instructions.json (the first tree is "ours").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# Runs inside valgrind, in the tree measured: builds the case, then counts only the phase asked.
_CHILD = r"""
import importlib.util, json, os, random, subprocess, sys
from pathlib import Path
root, case, phase, pending = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
spec = importlib.util.spec_from_file_location("bsc", root / "bench" / "bench_scheduler_core.py")
b = importlib.util.module_from_spec(spec); sys.modules["bsc"] = b; spec.loader.exec_module(b)
from controlplane.scheduling.core import SchedulingPass
site = json.loads(Path(b.sites_file()).read_text())["campus-300mw"]
mix = [json.loads(line) for line in Path(b.WORKLOADS).read_text().splitlines() if line.strip()]
rows, power = b.fleet_rows(site), b.power_model(site)
tenants = {"acme-ai": b.TenantPolicy("acme-ai", reserved_gpus=int(1024 * site["racks"]["count"] / 64))}
running = b.fill(rows, mix, power, random.Random(7), 0.7) if case == "70% full" else []
queue = b.draw_queue(mix, pending, random.Random(8), "w")
snap = b.build_snapshot(rows, running, power, tenants)
def toggle(state): subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=True, capture_output=True)
if phase == "init": toggle("on")
p = SchedulingPass(snap)
if phase == "init": toggle("off")
if phase == "run": toggle("on")
decisions = p.run(queue)
if phase == "run": toggle("off")
print("decisions", len(decisions))
"""


def count(tree: Path, case: str, phase: str, pending: int) -> int:
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            _CHILD,
            str(tree),
            case,
            phase,
            str(pending),
        ],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from callgrind:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def _label(tree: Path) -> str:
    """A tree by its commit (no machine's paths in the results a clone carries)."""
    head = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    commit = head.stdout.strip() or tree.name
    return f"{commit} (this tree)" if tree == ROOT else commit


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", type=Path, action="append", help="a checkout to measure (repeatable)")
    ap.add_argument("--pending", type=int, default=10_000)
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    trees = [t.resolve() for t in (args.tree or [ROOT])]
    results: dict[str, Any] = {"pending": args.pending, "site": "campus-300mw", "trees": {}}
    for tree in trees:
        per: dict[str, int] = {}
        for case in ("empty", "70% full"):
            for phase in ("init", "run"):
                per[f"{case} {phase}"] = count(tree, case, phase, args.pending)
                print(f"{_label(tree)}: {case} {phase}: {per[f'{case} {phase}']:,} instructions", flush=True)
        results["trees"][_label(tree)] = per
    if len(trees) > 1:
        ours, theirs = (results["trees"][_label(t)] for t in trees[:2])
        results["ratio_first_to_second"] = {k: round(ours[k] / theirs[k], 4) for k in ours}
        print(json.dumps(results["ratio_first_to_second"], indent=2))
    (ROOT / "bench" / "results" / "core_instructions.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
