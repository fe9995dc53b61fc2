"""The workloads the demo submits, and how their outcome is judged.

They cover what a visitor should see: one GPU to the whole rack, NVLink gangs across trays, a
spot job, a job that fails on purpose, and one that must wait, with its reason, until the rack
is empty. Each runs a stand-in for a training script, so no GPU or framework is needed.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Reads the rendezvous variables the agent sets, prints progress, exits with the code it is given.
TRAIN_SCRIPT = """
import os, sys, time
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
steps, code = int(sys.argv[1]), int(sys.argv[2])
print(f"rank {rank}/{world} GPUs {os.environ['CUDA_VISIBLE_DEVICES']} "
      f"master {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}", flush=True)
for step in range(1, steps + 1):
    time.sleep(1)
    if step % 5 == 0:
        print(f"step {step}/{steps} loss {2.0 / step:.4f}", flush=True)
if code:
    print("error: CUDA out of memory (simulated)", file=sys.stderr, flush=True)
sys.exit(code)
"""

ENDED = frozenset({"succeeded", "failed", "cancelled", "preempted"})


@dataclass(frozen=True)
class DemoWorkload:
    name: str
    gpus: int
    steps: int
    nvlink: str = "required"
    priority: str = "on_demand"
    exit_code: int = 0
    utilization: float = 0.9
    delay_s: float = 0.0  # submitted this long after the first batch

    @property
    def expected(self) -> str:
        return "succeeded" if self.exit_code == 0 else "failed"

    def body(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "gpus": self.gpus,
            "nvlink": self.nvlink,
            "priority": self.priority,
            "command": [sys.executable, "-c", TRAIN_SCRIPT, str(self.steps), str(self.exit_code)],
            "env": {"DEMO_JOB": self.name},
            "max_duration_s": 3600,
            "sim_utilization": self.utilization,
        }


DEMO_WORKLOADS = (
    DemoWorkload("hello-1gpu", 1, 15, nvlink="none", utilization=0.35),
    DemoWorkload("finetune-llama-8b", 4, 40, utilization=0.85),
    DemoWorkload("pretrain-moe-16gpu", 16, 60, utilization=0.95),
    DemoWorkload("eval-sweep", 8, 25, priority="spot", utilization=0.6),
    DemoWorkload("rl-rollouts-32gpu", 32, 45, utilization=0.8),
    DemoWorkload("broken-job", 2, 10, exit_code=1, utilization=0.7),
    # Needs the whole rack: pending, with its reason, until the others finish.
    DemoWorkload("full-rack-72gpu", 72, 20, utilization=0.97, delay_s=5),
)


def all_ended(submitted: Mapping[str, DemoWorkload], seen: Mapping[str, str]) -> bool:
    return bool(submitted) and all(seen.get(wl_id) in ENDED for wl_id in submitted)


def verdict(
    submitted: Mapping[str, DemoWorkload], seen: Mapping[str, str], *, until_done: bool
) -> tuple[bool, list[str]]:
    """Whether the run went as it should, and the lines that say so.

    A workload that ended must have ended as expected. One still going is fine when the demo
    ran for a time (``--duration`` or Ctrl-C), and a failure when it was to run until done.
    """
    if not submitted:
        return True, []
    lines = ["", "demo workloads:"]
    ok = True
    for wl_id, wl in submitted.items():
        state = seen.get(wl_id, "?")
        good = state == wl.expected or (not until_done and state not in ENDED)
        ok &= good
        lines.append(f"  {wl.name:<22} {state:<10} (expected {wl.expected}){'' if good else '  <-- unexpected'}")
    return ok, lines
