"""Start-up recovery against real processes: an agent SIGKILLed with its workloads still running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.daemon import recover_orphans
from agents.protocol import Assignment, AssignmentPhase
from agents.reconcile import plan_reconcile
from agents.runtime.orphans import ENDED_MESSAGE, STOPPED_MESSAGE, LiveProcess, group_members, read_start_ticks
from agents.state import FinishedLedger, ProcessLedger

ROOT = Path(__file__).resolve().parents[2]
GPUS = ["GPU-0", "GPU-1"]

# A workload whose leader spawns a grandchild; both report their pid, then sleep. With
# ``stubborn`` both ignore SIGTERM, so only the SIGKILL after the grace ends them.
WORKLOAD = """
import os, signal, subprocess, sys, time
stubborn = sys.argv[1] == "stubborn"
if stubborn:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen([sys.executable, "-c",
    "import signal, sys, time\\n"
    "if sys.argv[1] == 'stubborn': signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
    "time.sleep(600)", sys.argv[1]])
with open(sys.argv[2], "w") as f:
    f.write(f"{os.getpid()} {grandchild.pid}")
time.sleep(600)
"""

# The agent: a ProcessRunner recording into the state dir, killed with its workloads running.
AGENT = """
import json, os, signal, sys, time
from pathlib import Path
from agents.protocol import Assignment
from agents.runtime.processes import ProcessRunner
from agents.state import ProcessLedger

state = Path(sys.argv[1])
runner = ProcessRunner(state / "logs", record_live=ProcessLedger(state / "processes.json").save)
for raw in json.loads(sys.argv[2]):
    runner.start(Assignment.model_validate(raw))
deadline = time.monotonic() + 20
while not all((state / f"{wid}.pids").exists() and (state / f"{wid}.pids").read_text() for wid in sys.argv[3:]):
    assert time.monotonic() < deadline, "workloads did not start"
    time.sleep(0.02)
os.kill(os.getpid(), signal.SIGKILL)
"""


def workload(workload_id: str, state: Path, *, stubborn: bool, epoch: int = 4) -> Assignment:
    mode = "stubborn" if stubborn else "polite"
    return Assignment(
        workload_id=workload_id,
        epoch=epoch,
        rank=0,
        world_size=1,
        gpu_uuids=GPUS if workload_id == "wl-a" else ["GPU-2"],
        command=[sys.executable, "-c", WORKLOAD, mode, str(state / f"{workload_id}.pids")],
        master_addr="127.0.0.1",
        master_port=29500,
    )


def alive(pid: int) -> bool:
    """Running (not dead, not a zombie waiting for a slow PID 1 to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process group leader, standing in for whatever got a recorded pid next."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def test_a_killed_agents_workloads_are_stopped_at_restart_and_never_started_again(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    desired = [workload("wl-a", state, stubborn=False), workload("wl-b", state, stubborn=True)]
    agent = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(AGENT), str(state), json.dumps([a.model_dump() for a in desired])]
        + ["wl-a", "wl-b"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert agent.returncode == -signal.SIGKILL, agent.stderr
    pids = {wid: [int(p) for p in (state / f"{wid}.pids").read_text().split()] for wid in ("wl-a", "wl-b")}
    try:
        assert all(alive(pid) for group in pids.values() for pid in group)  # the orphans outlived the agent
        ledger = ProcessLedger(state / "processes.json")
        assert sorted((e.workload_id, e.pid) for e in ledger.load()) == [
            ("wl-a", pids["wl-a"][0]),
            ("wl-b", pids["wl-b"][0]),
        ]

        began = time.monotonic()
        statuses = recover_orphans(ledger, FinishedLedger(state / "finished.json"), grace_s=0.5)
        assert time.monotonic() - began < 5.0

        # Whole process groups are gone, the SIGTERM-proof one included.
        for leader, grandchild in pids.values():
            assert group_members(leader) == []
            assert not alive(leader) and not alive(grandchild)
        by_id = {s.workload_id: s for s in statuses}
        assert {s.phase for s in statuses} == {AssignmentPhase.STOPPED}
        assert by_id["wl-a"].message == f"{STOPPED_MESSAGE} (SIGTERM)"
        assert by_id["wl-b"].message == f"{STOPPED_MESSAGE} (SIGKILL after 0.5s)"
        assert by_id["wl-a"].pid == pids["wl-a"][0] and by_id["wl-a"].started_at is not None
        assert ledger.load() == []
    finally:
        for group in pids.values():
            for pid in group:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)

    # A later restart still knows them, and the planner does not start them again though still desired.
    finished = FinishedLedger(state / "finished.json")
    known = list(finished.restored.values())
    assert {(s.workload_id, s.phase) for s in known} == {("wl-a", "stopped"), ("wl-b", "stopped")}
    assert all((s.message or "").startswith(STOPPED_MESSAGE) for s in known)
    plan = plan_reconcile(desired, known, max_epoch_seen=4, node_gpus=[*GPUS, "GPU-2"])
    assert plan.start == () and plan.reject == () and plan.stop == ()
    # Once the control plane dropped them and has the statuses, they are forgotten as usual.
    plan = plan_reconcile([], known, max_epoch_seen=4, node_gpus=GPUS, settled={("wl-a", 0, 4), ("wl-b", 0, 4)})
    assert sorted(plan.forget) == [("wl-a", 0, 4), ("wl-b", 0, 4)]


def test_a_recorded_pid_now_used_by_an_unrelated_process_is_left_alone(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    ticks = read_start_ticks(sleeper.pid)
    assert ticks is not None
    ledger = ProcessLedger(tmp_path / "processes.json")
    ledger.save(
        [
            # Our process had this pid, but started earlier: the kernel has since reused the pid.
            LiveProcess(workload_id="reused", rank=0, epoch=1, pid=sleeper.pid, start_ticks=ticks - 1),
            # No start time recorded (not Linux): it cannot be proven ours, so it is not touched.
            LiveProcess(workload_id="unknown", rank=0, epoch=1, pid=sleeper.pid, start_ticks=None),
            # Gone altogether.
            LiveProcess(workload_id="gone", rank=2, epoch=1, pid=2**22 + 1, start_ticks=1),
        ]
    )
    finished = FinishedLedger(tmp_path / "finished.json")
    statuses = recover_orphans(ledger, finished, grace_s=0.1)
    assert sleeper.poll() is None and alive(sleeper.pid)
    assert {s.workload_id: s.phase for s in statuses} == dict.fromkeys(["reused", "unknown", "gone"], "stopped")
    assert all(s.message == f"{ENDED_MESSAGE} (exit code unknown)" for s in statuses)
    assert set(FinishedLedger(tmp_path / "finished.json").restored) == {
        ("reused", 0, 1),
        ("unknown", 0, 1),
        ("gone", 2, 1),
    }


def test_nothing_to_recover_writes_nothing(tmp_path: Path) -> None:
    statuses = recover_orphans(
        ProcessLedger(tmp_path / "processes.json"), FinishedLedger(tmp_path / "finished.json"), grace_s=0.1
    )
    assert statuses == []
    assert list(tmp_path.iterdir()) == []
