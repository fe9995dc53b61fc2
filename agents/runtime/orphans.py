"""Find and stop the workload process groups a dead agent left behind.

Each workload runs in its own session, so a SIGKILLed (or crashed) agent leaves them running,
holding their GPUs. The runner records every live group leader (pid = pgid) with its start
time from ``/proc/<pid>/stat``; a restarted agent stops a group only if its leader still has
that start time, so a pid the kernel has since given to an unrelated process is never signalled.
A non-child's exit code cannot be known, so both outcomes are reported as STOPPED.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agents.protocol import AssignmentPhase, AssignmentStatus

log = logging.getLogger(__name__)

STOPPED_MESSAGE = "agent restarted: its process was stopped"
ENDED_MESSAGE = "agent restarted: its process had ended"
KILL_WAIT_S = 5.0  # after SIGKILL: only a process stuck in the kernel takes longer
POLL_S = 0.05

PROC = Path("/proc")


@dataclass(frozen=True)
class LiveProcess:
    """One workload process group the runner started: the leader's pid is the group id."""

    workload_id: str
    rank: int
    epoch: int
    pid: int
    start_ticks: int | None  # /proc/<pid>/stat field 22: clock ticks after boot; None off Linux
    started_at: float | None = None  # unix seconds, for the status report


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (the command name may hold spaces and parentheses)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text.rsplit(")", 1)[1].split()


def read_start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks after boot; None if there is no such process."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else None


def group_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that still run (zombies hold nothing and are left to init)."""
    members = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def stop_orphans(
    entries: Sequence[LiveProcess],
    *,
    grace_s: float,
    clock: Callable[[], float] = time.time,
) -> list[AssignmentStatus]:
    """SIGTERM the groups still ours, SIGKILL them after ``grace_s``; a STOPPED status for every entry."""
    ours = [e for e in entries if e.start_ticks is not None and read_start_ticks(e.pid) == e.start_ticks]
    for entry in ours:
        log.warning("stopping %s rank %d epoch %d (pgid %d) left by a previous agent", *_key(entry), entry.pid)
        _signal_group(entry.pid, signal.SIGTERM)
    killed = _wait_gone(ours, grace_s)
    for entry in killed:
        log.warning("pgid %d ignored SIGTERM for %gs; sending SIGKILL", entry.pid, grace_s)
        _signal_group(entry.pid, signal.SIGKILL)
    for entry in _wait_gone(killed, KILL_WAIT_S):
        log.error("pgid %d outlived SIGKILL; its GPUs may still be in use", entry.pid)
    now = clock()
    statuses = []
    for entry in entries:
        if entry in killed:
            message = f"{STOPPED_MESSAGE} (SIGKILL after {grace_s:g}s)"
        elif entry in ours:
            message = f"{STOPPED_MESSAGE} (SIGTERM)"
        else:
            message = f"{ENDED_MESSAGE} (exit code unknown)"
        statuses.append(
            AssignmentStatus(
                workload_id=entry.workload_id,
                epoch=entry.epoch,
                rank=entry.rank,
                phase=AssignmentPhase.STOPPED,
                pid=entry.pid,
                started_at=entry.started_at,
                finished_at=now,
                message=message,
            )
        )
    return statuses


def _wait_gone(entries: Sequence[LiveProcess], timeout_s: float) -> list[LiveProcess]:
    """Wait until every group is empty; return those that are not by the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [e for e in entries if group_members(e.pid)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(POLL_S)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group emptied meanwhile
        os.killpg(pgid, sig)


def _key(entry: LiveProcess) -> tuple[str, int, int]:
    return (entry.workload_id, entry.rank, entry.epoch)
