"""Every decision of the scheduling core on fixed inputs, as one digest per case: a change meant to
make the core cheaper (not different) must leave every digest as it was.

Cases: the campus pass of ``bench_scheduler_core.py`` (campus-300mw, 10,000 pending) on the empty
and the 70% full fleet; a second pass on the full fleet a minute later with the first pass's
planned starts carried into the requests (kept plans: seeding, early starts, starts on holds);
and the first two simulated hours of the overloaded replay (``replay_day.py --columns core``), its
JSON figures without the wall-clock ones. Runs the core of the tree this file is in:

    PYTHONPATH=. .venv/bin/python bench/decisions_digest.py --out /tmp/after.json
    PYTHONPATH=/tmp/before .venv/bin/python /tmp/before/bench/decisions_digest.py --out /tmp/before.json
    .venv/bin/python bench/decisions_digest.py --compare /tmp/before.json /tmp/after.json

``--dump DIR`` also writes each case's decisions one per line, to diff when a digest differs.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REPLAY_UNTIL_S = 7200


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("bsc", ROOT / "bench" / "bench_scheduler_core.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bsc"] = module
    spec.loader.exec_module(module)
    return module


def campus_cases() -> dict[str, list[str]]:
    """Decisions (one repr a line) of the campus passes."""
    b = _bench()
    from controlplane.scheduling.core import SchedulingPass
    from controlplane.scheduling.snapshot import Unplaced

    site = json.loads(Path(b.sites_file()).read_text())["campus-300mw"]
    mix = [json.loads(line) for line in Path(b.WORKLOADS).read_text().splitlines() if line.strip()]
    rows, power = b.fleet_rows(site), b.power_model(site)
    tenants = {"acme-ai": b.TenantPolicy("acme-ai", reserved_gpus=int(1024 * site["racks"]["count"] / 64))}
    out: dict[str, list[str]] = {}
    for case, target in (("empty", 0.0), ("70% full", 0.7)):
        running = b.fill(rows, mix, power, random.Random(7), target) if target else []
        queue = b.draw_queue(mix, 10_000, random.Random(8), "w")
        snap = b.build_snapshot(rows, running, power, tenants)
        decisions = SchedulingPass(snap).run(queue)
        out[case] = [repr(d) for d in decisions]
        if not target:
            continue
        plans = {d.workload_id: d.plan for d in decisions if isinstance(d, Unplaced) and d.plan is not None}
        carried = [dataclasses.replace(r, plan=plans.get(r.workload_id)) for r in queue]
        later = dataclasses.replace(snap, now=snap.now + 60.0)
        out[f"{case}, second pass with plans"] = [repr(d) for d in SchedulingPass(later).run(carried)]
    return out


def _without_wall(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_wall(v) for k, v in value.items() if "wall" not in k}
    if isinstance(value, list):
        return [_without_wall(v) for v in value]
    return value


def replay_case() -> list[str]:
    """The overloaded replay's figures (core column, first two hours), one JSON line."""
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "bench" / "replay_day.py"),
                "--day",
                "overloaded",
                "--columns",
                "core",
                "--until-s",
                str(REPLAY_UNTIL_S),
                "--out",
                out,
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        figures = json.loads((Path(out) / "replay_overloaded.json").read_text())
    return [json.dumps(_without_wall(figures), sort_keys=True)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, help="write the digests here (JSON)")
    ap.add_argument("--dump", type=Path, help="also write each case's decisions into this directory")
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"), help="compare two digest files")
    args = ap.parse_args()
    if args.compare:
        before, after = (json.loads(p.read_text()) for p in args.compare)
        differ = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        for k in differ:
            print(f"differs: {k}: {before.get(k)} -> {after.get(k)}")
        print("identical" if not differ else f"{len(differ)} case(s) differ")
        return 1 if differ else 0
    cases = {**campus_cases(), "overloaded replay, first 2 h": replay_case()}
    digests: dict[str, Any] = {}
    for name, lines in cases.items():
        digests[name] = {"lines": len(lines), "sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest()}
        if args.dump:
            args.dump.mkdir(parents=True, exist_ok=True)
            (args.dump / (name.replace(" ", "_").replace(",", "").replace("%", "pct") + ".txt")).write_text(
                "\n".join(lines) + "\n"
            )
    text = json.dumps(digests, indent=2) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
