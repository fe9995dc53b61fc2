"""Run each assignment as a plain process group on this host.

Why a process group: a tenant command (torchrun, a shell script) forks workers, and those
workers hold the GPUs. Starting every command in its own session lets the agent signal the
whole tree at once on stop, and reap leftovers when the leader exits, so GPUs are really free
before the control plane hands them to the next owner. (A tenant that calls ``setsid`` itself
escapes this; cgroups close that gap and are a later step.)

With a ``Sandbox`` (``agents.runtime.sandbox``, what the agent uses unless told
``--insecure-no-sandbox``) each command runs as a uid of its own in its own PID namespace and
mount view; the process group's leader is then the sandbox's launcher, which exits only once
every process of the workload is gone, so stop, SIGKILL and orphan recovery work on it unchanged.

Nothing here blocks the caller: a stop sends SIGTERM and a timer escalates to SIGKILL, and one
waiter thread per process records the exit. Every start and exit also goes to ``record_live``
(the agent's process ledger), so an agent that dies without stopping its workloads finds them
again when it restarts (see ``orphans``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from agents.protocol import Assignment, AssignmentPhase, AssignmentStatus
from agents.runtime.orphans import LiveProcess, read_start_ticks
from agents.runtime.sandbox import Sandbox, SandboxError

log = logging.getLogger(__name__)

AssignmentKey = tuple[str, int, int]  # (workload_id, rank, epoch)

TERMINAL_PHASES = frozenset({AssignmentPhase.EXITED, AssignmentPhase.STOPPED, AssignmentPhase.REJECTED})

# Variables taken from the agent's own environment; anything else (credentials, tokens) stays out.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME")

# Workload ids become directory names; refuse anything that could walk out of the log dir.
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def assignment_key(item: Assignment | AssignmentStatus) -> AssignmentKey:
    return (item.workload_id, item.rank, item.epoch)


def inherited_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The minimum of the agent's environment a tenant process needs to find its tools."""
    source = os.environ if environ is None else environ
    env = {name: source[name] for name in _INHERITED if name in source}
    env.setdefault("PATH", os.defpath)
    env["PYTHONUNBUFFERED"] = "1"  # logs reach the control plane while the job runs
    return env


def placement_env(assignment: Assignment, *, node_address: str | None = None) -> dict[str, str]:
    """Variables implied by the control plane's placement; the tenant cannot override them.

    The gang runs one process per node (torchrun style): ``rank`` is the node rank and
    ``world_size`` the number of nodes; torchrun reads the ``PET_*`` forms of its flags.
    """
    gpus = ",".join(assignment.gpu_uuids)
    nnodes = str(assignment.world_size)
    rank = str(assignment.rank)
    port = str(assignment.master_port)
    nproc = str(len(assignment.gpu_uuids))
    env = {
        "CUDA_VISIBLE_DEVICES": gpus,
        "NVIDIA_VISIBLE_DEVICES": gpus,
        "NODE_RANK": rank,
        "NNODES": nnodes,
        "RANK": rank,
        "WORLD_SIZE": nnodes,
        "LOCAL_WORLD_SIZE": nproc,
        "MASTER_ADDR": assignment.master_addr,
        "MASTER_PORT": port,
        "PET_NNODES": nnodes,
        "PET_NODE_RANK": rank,
        "PET_MASTER_ADDR": assignment.master_addr,
        "PET_MASTER_PORT": port,
        "PET_NPROC_PER_NODE": nproc,
        "SWITCHYARD_WORKLOAD_ID": assignment.workload_id,
        "SWITCHYARD_EPOCH": str(assignment.epoch),
        "SWITCHYARD_PEERS": ",".join(assignment.peers),
    }
    if node_address:
        env["SWITCHYARD_NODE_ADDRESS"] = node_address
    return env


def build_env(base: Mapping[str, str], assignment: Assignment, *, node_address: str | None = None) -> dict[str, str]:
    placement = placement_env(assignment, node_address=node_address)
    overridden = sorted(set(assignment.env) & set(placement))
    if overridden:
        log.warning(
            "workload %s: ignoring tenant values for %s (set by placement)",
            assignment.workload_id,
            ", ".join(overridden),
        )
    return {**base, **assignment.env, **placement}


@dataclass
class _Run:
    assignment: Assignment
    log_path: Path
    status: AssignmentStatus
    proc: subprocess.Popen[bytes] | None = None
    start_ticks: int | None = None
    stop_requested: bool = False
    stop_reason: str = ""
    timer: threading.Timer | None = None
    uid: int | None = None  # the sandbox uid this run holds until its namespace is gone


class ProcessRunner:
    """Starts, watches and stops assignment processes; ``poll()`` is the truth the agent reports."""

    def __init__(
        self,
        log_dir: Path,
        *,
        work_dir: Path | None = None,
        base_env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        record_live: Callable[[Sequence[LiveProcess]], None] | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        """``record_live`` receives every live process group after each start and exit; it must
        persist them (it is called from the runner's threads, never two calls at once).
        ``sandbox`` None runs commands as the agent's own user, unconfined (development only)."""
        if sandbox is not None and work_dir is None:
            raise ValueError("a sandboxed runner needs a work_dir: the workload's only writable directory")
        self._log_dir = Path(log_dir)
        self._sandbox = sandbox
        self._work_dir = Path(work_dir) if work_dir is not None else None
        self._base_env = dict(base_env) if base_env is not None else inherited_env()
        self._clock = clock
        self._runs: dict[AssignmentKey, _Run] = {}
        self._cond = threading.Condition()
        self._record_live = record_live
        self._record_lock = threading.Lock()  # serialises record_live calls; the last one wins

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, assignment: Assignment, *, node_address: str | None = None) -> AssignmentStatus:
        """Spawn the assignment's command; idempotent per (workload, rank, epoch).

        A command that cannot be executed becomes a REJECTED status, not an exception: the
        tenant needs to read why, and the agent must carry on with the other assignments.
        """
        key = assignment_key(assignment)
        with self._cond:
            existing = self._runs.get(key)
            if existing is not None:
                return existing.status
        if not _SAFE_ID.match(assignment.workload_id):
            return self.reject(assignment, f"unsafe workload id {assignment.workload_id!r}")
        env = build_env(self._base_env, assignment, node_address=node_address)
        invalid = _invalid_exec_input(assignment.command, env)
        if invalid is not None:
            return self.reject(assignment, invalid)
        log_path = self._log_dir / assignment.workload_id / f"{assignment.rank}.log"
        uid: int | None = None
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            cwd = None
            if self._work_dir is not None:
                cwd = self._work_dir / assignment.workload_id
                cwd.mkdir(parents=True, exist_ok=True)
            if self._sandbox is not None and cwd is not None:
                uid = self._sandbox.acquire_uid()
                self._sandbox.prepare_work_dir(cwd, uid)
                if "HOME" not in assignment.env:
                    env["HOME"] = str(cwd)  # the agent's home is hidden from the workload
            # Append: a re-placed workload (new epoch) continues the same log, so shipped offsets hold.
            with open(log_path, "ab") as out:
                try:
                    proc = self._spawn(assignment, env, cwd, uid, out)
                except (OSError, SandboxError) as exc:
                    message = _spawn_failure(assignment, exc)
                    out.write(f"switchyard: {message}\n".encode())
                    self._release(uid)
                    return self.reject(assignment, message, log_path=log_path)
        except (OSError, SandboxError) as exc:  # the log or work dir, or no uid left
            self._release(uid)
            return self.reject(assignment, f"the agent could not prepare the workload: {exc}", log_path=log_path)
        now = self._clock()
        status = AssignmentStatus(
            workload_id=assignment.workload_id,
            epoch=assignment.epoch,
            rank=assignment.rank,
            phase=AssignmentPhase.STARTING,
            pid=proc.pid,
            started_at=now,
        )
        # The leader is our unreaped child, so its /proc entry exists until the waiter reaps it.
        start_ticks = read_start_ticks(proc.pid)
        run = _Run(assignment=assignment, log_path=log_path, status=status, proc=proc, start_ticks=start_ticks, uid=uid)
        with self._cond:
            self._runs[key] = run
        threading.Thread(target=self._wait_for_exit, args=(key, run), name=f"wait-{proc.pid}", daemon=True).start()
        log.info("started %s rank %d epoch %d as pid %d", *key, proc.pid)
        try:
            self._save_live()
        except OSError as exc:
            # Unrecorded, it would outlive an agent crash unseen and its GPUs be handed out twice.
            log.exception("cannot record pid %d in the process ledger; stopping it", proc.pid)
            with self._cond:
                self._request_stop(run, 0.0, f"cannot record the process in the agent's state dir: {exc}")
        return status

    def _spawn(
        self, assignment: Assignment, env: dict[str, str], cwd: Path | None, uid: int | None, out: IO[bytes]
    ) -> subprocess.Popen[bytes]:
        if self._sandbox is not None and uid is not None and cwd is not None:
            return self._sandbox.spawn(
                assignment.command, env=env, cwd=cwd, uid=uid, gpu_uuids=assignment.gpu_uuids, stdout=out
            )
        return subprocess.Popen(
            assignment.command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )

    def _release(self, uid: int | None) -> None:
        if self._sandbox is not None and uid is not None:
            self._sandbox.release_uid(uid)

    def reject(self, assignment: Assignment, message: str, *, log_path: Path | None = None) -> AssignmentStatus:
        """Record that an assignment will not run, so the agent reports why."""
        key = assignment_key(assignment)
        status = AssignmentStatus(
            workload_id=assignment.workload_id,
            epoch=assignment.epoch,
            rank=assignment.rank,
            phase=AssignmentPhase.REJECTED,
            finished_at=self._clock(),
            message=message[:2000],
        )
        path = log_path or self._log_dir / assignment.workload_id / f"{assignment.rank}.log"
        with self._cond:
            self._runs.setdefault(key, _Run(assignment=assignment, log_path=path, status=status))
            log.warning("rejected %s rank %d epoch %d: %s", *key, message)
            return self._runs[key].status

    def stop(
        self,
        workload_id: str,
        grace_s: float = 10.0,
        *,
        rank: int | None = None,
        epoch: int | None = None,
        reason: str = "stopped by the agent",
    ) -> None:
        """SIGTERM the process group now, SIGKILL it after ``grace_s``; returns at once.

        ``reason`` starts the final status message, so the control plane and the tenant can tell
        a cancel or preemption from an agent shutdown.
        """
        with self._cond:
            runs = [
                run
                for (wid, r, e), run in self._runs.items()
                if wid == workload_id and (rank is None or r == rank) and (epoch is None or e == epoch)
            ]
            for run in runs:
                self._request_stop(run, grace_s, reason)

    def stop_all(self, grace_s: float = 10.0, *, reason: str = "stopped by the agent") -> None:
        with self._cond:
            for run in self._runs.values():
                self._request_stop(run, grace_s, reason)

    def wait_idle(self, timeout: float) -> bool:
        """Block until no assignment process is alive; for shutdown, not for the agent's loops."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while any(_alive(run) for run in self._runs.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def forget(self, key: AssignmentKey) -> None:
        """Drop a terminal status once the control plane has it and no longer wants the assignment."""
        with self._cond:
            run = self._runs.get(key)
            if run is not None and run.status.phase in TERMINAL_PHASES:
                del self._runs[key]

    # -- views --------------------------------------------------------------------------------

    def poll(self) -> list[AssignmentStatus]:
        with self._cond:
            for run in self._runs.values():
                if run.status.phase is AssignmentPhase.STARTING and run.proc is not None:
                    run.status = run.status.model_copy(update={"phase": AssignmentPhase.RUNNING})
            return [self._runs[key].status for key in sorted(self._runs)]

    def active_assignments(self) -> list[Assignment]:
        """Assignments whose process is alive (starting, running or being stopped)."""
        with self._cond:
            return [
                run.assignment
                for run in self._runs.values()
                if run.proc is not None and run.status.phase not in TERMINAL_PHASES
            ]

    def log_files(self) -> list[tuple[str, int, Path]]:
        with self._cond:
            seen = {(run.assignment.workload_id, run.assignment.rank): run.log_path for run in self._runs.values()}
        return [(wid, rank, path) for (wid, rank), path in sorted(seen.items())]

    def live_processes(self) -> list[LiveProcess]:
        """Process groups started and not yet reaped: what ``record_live`` persists."""
        with self._cond:
            return [
                LiveProcess(
                    workload_id=wid,
                    rank=rank,
                    epoch=epoch,
                    pid=run.proc.pid,
                    start_ticks=run.start_ticks,
                    started_at=run.status.started_at,
                )
                for (wid, rank, epoch), run in sorted(self._runs.items())
                if run.proc is not None and run.status.phase not in TERMINAL_PHASES
            ]

    # -- internals ----------------------------------------------------------------------------

    def _save_live(self) -> None:
        if self._record_live is None:
            return
        with self._record_lock:  # snapshot and write together, so an older snapshot never lands last
            self._record_live(self.live_processes())

    def _request_stop(self, run: _Run, grace_s: float, reason: str) -> None:
        if run.proc is None or run.stop_requested or run.status.phase in TERMINAL_PHASES:
            return
        run.stop_requested = True
        run.stop_reason = reason
        _signal_group(run.proc.pid, signal.SIGTERM)
        message = f"stopping: SIGTERM sent, SIGKILL after {grace_s:g}s"
        run.status = run.status.model_copy(update={"message": message})
        run.timer = threading.Timer(grace_s, self._escalate, args=(run,))
        run.timer.daemon = True
        run.timer.start()

    def _escalate(self, run: _Run) -> None:
        with self._cond:
            if run.proc is not None and run.status.phase not in TERMINAL_PHASES:
                log.warning("pid %d ignored SIGTERM; sending SIGKILL to its process group", run.proc.pid)
                _signal_group(run.proc.pid, signal.SIGKILL)

    def _wait_for_exit(self, key: AssignmentKey, run: _Run) -> None:
        proc = run.proc
        assert proc is not None
        # Wait without reaping: while the leader is a zombie its pid cannot be reused, so the
        # group id still names this workload's leftovers when they are killed.
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        _signal_group(proc.pid, signal.SIGKILL)
        code = proc.wait()
        if run.uid is not None and self._sandbox is not None:
            # A SIGKILL to the group ends the leader at once, while the kernel is still tearing
            # down the namespace its init left (a process that called setsid is killed then, not
            # by the group signal): the workload has ended, and its uid is free, only when no
            # process runs as that uid any more.
            _wait_uid_gone(run.uid, UID_GONE_TIMEOUT_S)
        self._release(run.uid)  # no process holds the uid now
        finished = self._clock()
        with self._cond:
            if run.timer is not None:
                run.timer.cancel()
            phase = AssignmentPhase.STOPPED if run.stop_requested else AssignmentPhase.EXITED
            message = _describe_exit(code, stop_reason=run.stop_reason if run.stop_requested else None)
            run.status = run.status.model_copy(
                update={"phase": phase, "exit_code": code, "finished_at": finished, "message": message}
            )
            self._cond.notify_all()
        log.info("%s rank %d epoch %d: %s", *key, message)
        try:
            self._save_live()
        except OSError:
            # A stale entry is harmless: a restarted agent finds the pid gone (or reused) and skips it.
            log.exception("cannot remove pid %d from the process ledger", proc.pid)


UID_GONE_TIMEOUT_S = 10.0  # the kernel kills a dead namespace's processes in milliseconds


def uid_processes(uid: int, proc: Path = Path("/proc")) -> list[int]:
    """Pids of live (not zombie) processes whose real uid is ``uid``, in any PID namespace."""
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue  # ended while we looked
        real = state = ""
        for line in status.splitlines():
            if line.startswith("Uid:"):
                real = line.split()[1]
            elif line.startswith("State:"):
                state = line.split()[1]
        if real == str(uid) and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def _wait_uid_gone(uid: int, timeout_s: float) -> None:
    """Until no process runs as ``uid`` (bounded: a process the kernel cannot end, in D state,
    is logged and left: the uid is then released anyway, as before)."""
    deadline = time.monotonic() + timeout_s
    while (left := uid_processes(uid)) and time.monotonic() < deadline:
        time.sleep(0.01)
    if left:
        log.warning("uid %d: processes %s still alive %gs after their workload ended", uid, left, timeout_s)


def _invalid_exec_input(command: Sequence[str], env: Mapping[str, str]) -> str | None:
    """Why the OS cannot execute this command line and environment (a NUL byte, a bad name), or None."""
    for i, arg in enumerate(command):
        if "\0" in arg:
            return f"command argument {i} contains a NUL byte"
    for name, value in env.items():
        if not name or "=" in name or "\0" in name:
            return f"invalid environment variable name {name!r}"
        if "\0" in value:
            return f"environment variable {name} contains a NUL byte"
    return None


def _spawn_failure(assignment: Assignment, exc: Exception) -> str:
    if isinstance(exc, SandboxError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"cannot execute {assignment.command[0]!r}: {exc.strerror or exc}"
    return f"cannot start: {exc}"


def _alive(run: _Run) -> bool:
    return run.proc is not None and run.status.phase not in TERMINAL_PHASES


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is already empty
        os.killpg(pgid, sig)


def _describe_exit(code: int, *, stop_reason: str | None) -> str:
    if code >= 0:
        how = f"exit code {code}"
    else:
        try:
            how = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"killed by signal {-code}"
    return f"{stop_reason} ({how})" if stop_reason else f"exited ({how})"
