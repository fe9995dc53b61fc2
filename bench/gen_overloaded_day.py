"""Generate an overloaded day on ``site-18mw``: the scenario day's kinds of work, 1.6x its arrivals.

    .venv/bin/python bench/gen_overloaded_day.py [--seed 10] [--factor 1.6] [--out PATH]

Writes ``controlplane/scenarios/day-workloads-overloaded.jsonl`` (the committed file is this
script's output with the defaults; a test regenerates it and compares) and prints the arrival
ratio and the offered GPU-hours against the fleet's.

The rules:

- **Arrivals**: hour by hour, a Poisson process at ``factor`` times the scenario day's arrivals in
  that hour (exponential gaps at rate ``factor x n_h / 3600 s``; so the count in each hour is
  Poisson with mean ``factor x n_h``), submission times floored to whole seconds as in the scenario.
- **What arrives**: each arrival is one workload of the scenario day drawn uniformly with
  replacement, taking its tenant, class, gang size, NVLink policy, duration, mean utilisation and
  price together (the scenario's empirical joint distribution, correlations kept). Ids are
  ``o00001``... in submission order.
- **Declared limits**: ``max_duration_s`` and ``checkpoint_interval_s`` (null: none) by the one
  rule in ``controlplane.scenarios.limits`` (hash-seeded from the new id), the rule the replay
  applies to the scenario day, which lacks them.
- Everything comes from ``random.Random(seed)`` and the scenario file: the same seed gives the
  same file on any machine.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from controlplane.scenarios import day_workloads_file, overloaded_day_workloads_file, sites_file
from controlplane.scenarios.limits import declared

SEED = 10
FACTOR = 1.6
HOUR_S = 3600.0
SITE = "site-18mw"
FIELDS = ("tenant", "priority", "gpus", "nvlink", "duration_s", "mean_gpu_util", "price_usd_per_gpu_hour")


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def hourly_arrivals(workloads: Sequence[dict[str, Any]], hours: int = 24) -> list[int]:
    counts = Counter(int(w["submit_s"] // HOUR_S) for w in workloads)
    return [counts.get(h, 0) for h in range(hours)]


def generate(scenario: Sequence[dict[str, Any]], *, seed: int = SEED, factor: float = FACTOR) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = sorted(scenario, key=lambda w: w["id"])  # independent of the file's line order
    drawn: list[tuple[int, dict[str, Any]]] = []
    for h, n in enumerate(hourly_arrivals(scenario)):
        rate = factor * n / HOUR_S
        if rate <= 0:
            continue
        t = h * HOUR_S + rng.expovariate(rate)
        while t < (h + 1) * HOUR_S:
            drawn.append((int(t), rng.choice(rows)))
            t += rng.expovariate(rate)
    out = []
    for i, (submit, src) in enumerate(drawn, start=1):
        wid = f"o{i:05d}"
        w: dict[str, Any] = {"id": wid, "submit_s": submit}
        w.update({k: src[k] for k in FIELDS})
        limits = declared(wid, float(src["duration_s"]))
        w["max_duration_s"] = limits.max_duration_s
        w["checkpoint_interval_s"] = limits.checkpoint_interval_s
        out.append(w)
    return out


def gpu_hours(workloads: Sequence[dict[str, Any]]) -> float:
    return sum(float(w["gpus"]) * float(w["duration_s"]) for w in workloads) / HOUR_S


def fleet_gpus(site: str = SITE) -> int:
    racks = json.loads(sites_file().read_text())[site]["racks"]
    return int(racks["count"] * racks["nodes_per_rack"] * racks["gpus_per_node"])


def dumps(workloads: Sequence[dict[str, Any]]) -> str:
    return "".join(json.dumps(w) + "\n" for w in workloads)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--factor", type=float, default=FACTOR)
    ap.add_argument("--out", type=Path, default=overloaded_day_workloads_file())
    args = ap.parse_args()
    scenario = load(day_workloads_file())
    day = generate(scenario, seed=args.seed, factor=args.factor)
    args.out.write_text(dumps(day))
    fleet_h = fleet_gpus() * 24.0
    print(
        f"wrote {len(day):,} workloads to {args.out.name} (seed {args.seed}): arrivals {len(day) / len(scenario):.3f}x "
        f"the scenario's {len(scenario):,}; offered {gpu_hours(day):,.0f} GPU-hours = "
        f"{gpu_hours(day) / fleet_h:.3f}x the fleet's {fleet_h:,.0f} (scenario: {gpu_hours(scenario) / fleet_h:.3f}x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
