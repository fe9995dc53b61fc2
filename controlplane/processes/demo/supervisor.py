"""The demo's child processes, started so that none outlives the demo, whatever ends it.

Children run in sessions of their own, so a Ctrl-C (SIGINT to the terminal's foreground process
group) reaches only the demo, which then stops them in order: the agents first (each stops its
workloads and sends a last report to an API that is still up), then the control plane, then
Redis. A child that does not stop in time is SIGKILLed, and so is a second Ctrl-C's impatience.

What the demo cannot do once it is SIGKILLed or has crashed, the kernel does: every child is
started with PR_SET_PDEATHSIG (``death_signal``), so it gets SIGTERM the moment the demo dies
and shuts down as it would at Ctrl-C; an agent still stops its workloads on SIGTERM.

An agent's workloads run in sessions of their own (the agent signals each tree as a whole), so
an agent SIGKILLed before it stopped them would leave them running with nobody to stop them.
After every agent has exited, whatever its process ledger still lists is stopped the way a
restarted agent does it (``agents.runtime.orphans``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# An agent's stop: its workloads' grace (10 s) and SIGKILL wait (5 s), then a last report and logs.
AGENT_STOP_S = 30.0
SERVICE_STOP_S = 15.0
LEFTOVER_GRACE_S = 2.0  # SIGTERM to SIGKILL for workloads an agent left behind


class Stage(IntEnum):
    """Stop order: lower first."""

    AGENT = 0
    CONTROL_PLANE = 1
    REDIS = 2


class ChildDied(RuntimeError):
    """A child exited while the demo runs; the message ends with its log."""


def death_signal(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel send ``sig`` to the child when the demo dies (Linux).

    The signal follows the death of the thread that forks, so children must be spawned from
    the demo's main thread. A demo that died between fork and prctl would never signal: the
    child checks its parent afterwards and does not start at all.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork: the child only calls it
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()

    def preexec() -> None:
        if prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0 or os.getppid() != parent:
            os._exit(126)

    return preexec


def cli(*argv: str) -> list[str]:
    """The argv of a `switchyard` subcommand run by this interpreter."""
    return [sys.executable, "-m", "controlplane.cli", *argv]


@dataclass
class Child:
    name: str
    stage: Stage
    process: subprocess.Popen[bytes]
    log_path: Path
    state_dir: Path | None = None  # an agent's: where its process ledger is

    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class Supervisor:
    log_dir: Path
    children: list[Child] = field(default_factory=list)
    # Set by a second Ctrl-C (or SIGTERM) while stopping: kill now instead of waiting.
    hurry: threading.Event = field(default_factory=threading.Event)
    agent_stop_s: float = AGENT_STOP_S
    service_stop_s: float = SERVICE_STOP_S

    def spawn(
        self, name: str, argv: Sequence[str], env: dict[str, str], *, stage: Stage, state_dir: Path | None = None
    ) -> Child:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "wb") as log:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(
                list(argv),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=death_signal(),  # safe here: the demo runs no other thread that could hold a lock
            )
        child = Child(name, stage, process, log_path, state_dir)
        self.children.append(child)
        return child

    def check(self) -> None:
        """Raise ChildDied if a child exited: the demo cannot go on without any of them."""
        for child in self.children:
            code = child.process.poll()
            if code is not None:
                tail = child.log_path.read_text(errors="replace")[-2000:]
                raise ChildDied(f"{child.name} exited with code {code}; its log ends with:\n{tail}")

    def stop_all(self) -> list[str]:
        """Stop every child, stage by stage; returns notes on what had to be forced."""
        notes: list[str] = []
        for stage in Stage:
            group = [c for c in self.children if c.stage is stage]
            self._stop(group, self.agent_stop_s if stage is Stage.AGENT else self.service_stop_s, notes)
            if stage is Stage.AGENT:
                for agent in group:
                    self._stop_leftovers(agent, notes)
        return notes

    def _stop(self, group: list[Child], timeout_s: float, notes: list[str]) -> None:
        for child in group:
            if child.alive():
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while any(c.alive() for c in group) and time.monotonic() < deadline and not self.hurry.is_set():
            time.sleep(0.1)
        for child in group:
            if child.alive():
                notes.append(f"{child.name} did not stop in time: killed")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGKILL)  # its session: pgid == pid
            child.process.wait()

    def _stop_leftovers(self, agent: Child, notes: list[str]) -> None:
        from agents.runtime.orphans import group_members, stop_orphans
        from agents.state import FatalError, ProcessLedger

        if agent.state_dir is None:
            return
        try:
            entries = ProcessLedger(agent.state_dir / "processes.json").load()
        except FatalError as exc:
            notes.append(f"{agent.name}: {exc}")
            return
        running = [e for e in entries if group_members(e.pid)]
        if running:
            stop_orphans(running, grace_s=0.0 if self.hurry.is_set() else LEFTOVER_GRACE_S)
            notes.append(f"{agent.name} left {len(running)} workload process group(s) running: stopped")
