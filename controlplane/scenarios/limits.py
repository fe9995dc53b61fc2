"""What a tenant declares with a workload beyond its shape: a maximum duration and a checkpoint interval.

The scenario day (``day-workloads.jsonl``) has neither; the overloaded day's generator
(``bench/gen_overloaded_day.py``) writes both, and the day replay (``bench/replay_day.py``) derives
them for a file that lacks them. Both use this one rule, so a workload declares the same limits
wherever it is read. The rule is deterministic: every draw is a hash of the workload's id, never a
random generator's state, so it does not depend on the order workloads are read in.

- ``max_duration_s``: tenants overestimate. The true duration times a factor drawn uniformly from
  [1.1, 3.0), rounded up to a whole 15 minutes.
- ``checkpoint_interval_s``: 70% of the workloads that run longer than 30 minutes checkpoint, every
  15, 30 or 60 minutes (one of the three, equally likely); the others, and every workload of 30
  minutes or less, declare none (a preemption loses all the work of the attempt).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

QUARTER_HOUR_S = 900.0
OVERESTIMATE = (1.1, 3.0)
CHECKPOINT_OVER_S = 1800.0
CHECKPOINT_SHARE = 0.7
CHECKPOINT_EVERY_S = (900.0, 1800.0, 3600.0)


@dataclass(frozen=True, slots=True)
class Declared:
    max_duration_s: float
    checkpoint_interval_s: float | None


def draw(workload_id: str, what: str) -> float:
    """A uniform draw in [0, 1) from the workload's id and what it is for."""
    digest = hashlib.sha256(f"{workload_id}/{what}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def round_up_quarter_hour(seconds: float) -> float:
    return math.ceil(seconds / QUARTER_HOUR_S - 1e-9) * QUARTER_HOUR_S


def declared(workload_id: str, duration_s: float) -> Declared:
    """The limits the rule gives a workload of this id and true duration."""
    lo, hi = OVERESTIMATE
    factor = lo + (hi - lo) * draw(workload_id, "max-duration")
    max_duration = round_up_quarter_hour(duration_s * factor)
    interval = None
    if duration_s > CHECKPOINT_OVER_S and draw(workload_id, "checkpoints") < CHECKPOINT_SHARE:
        k = int(draw(workload_id, "checkpoint-interval") * len(CHECKPOINT_EVERY_S))
        interval = CHECKPOINT_EVERY_S[k]
    return Declared(max_duration, interval)
