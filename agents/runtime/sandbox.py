"""Run each workload in a sandbox: its own uid, PID namespace, mount view and GPU device nodes.

Mechanism: namespaces made directly (unshare(2) and mount(2) through ctypes) by a small
launcher, ``sandbox_init.py``, that the agent runs as root for each workload. Chosen over
bubblewrap and util-linux ``unshare``+``setpriv`` because it needs nothing an agent host lacks
(Python and a Linux kernel), and because the agent's stop and orphan rules need exact control
of three things those tools do not give together: the recorded group leader must be the process
whose death means the workload is gone (the launcher waits for the namespace's init, whose exit
the kernel completes only once every process in the namespace is dead); SIGTERM must reach every
workload process once (the tenant command is not pid 1, which ignores default-handled signals;
the init forwards); and the workload must run as an arbitrary host uid without a user namespace
(bubblewrap run as root keeps uid 0 unless a user namespace maps it, and uid 0 owns the
credential file whatever the capabilities).

Identity: one uid (and a gid of the same number, no other groups) **per workload** on this node,
taken from a configured range (``--workload-uids``, default 1879048192-1879113727: 65,536 ids in
the range systemd leaves unused) and given back when the workload's namespace is gone. Per
workload rather than per tenant because assignments do not name their tenant, and because it is
stricter: two workloads of one tenant cannot touch each other either. A uid is reused only
after every process of its previous workload is dead, and a workload only sees its own work dir,
so nothing a previous holder of the uid left is reachable.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

LAUNCHER = Path(__file__).with_name("sandbox_init.py")
DEFAULT_UID_FIRST = 1879048192  # 0x70000000
DEFAULT_UID_COUNT = 65536
READY_TIMEOUT_S = 30.0  # the launcher builds the view and execs in milliseconds; past this it is stuck
GPU_CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
NVIDIA_PROCFS = Path("/proc/driver/nvidia/gpus")


class SandboxError(Exception):
    """A workload could not be started in its sandbox; the message says why (for the tenant)."""


def nvidia_minors(pci_bus_ids: Mapping[str, str | None], procfs: Path = NVIDIA_PROCFS) -> dict[str, int]:
    """GPU UUID -> /dev/nvidia<minor>, from the driver's ``.../gpus/<bus id>/information``."""
    minors = {}
    for uuid, bus_id in pci_bus_ids.items():
        if not bus_id:
            continue
        for candidate in {bus_id, bus_id.lower(), bus_id.lower().removeprefix("0000")}:
            try:
                text = (procfs / candidate / "information").read_text()
            except OSError:
                continue
            for line in text.splitlines():
                name, _, value = line.partition(":")
                if name.strip() == "Device Minor" and value.strip().isdigit():
                    minors[uuid] = int(value)
            break
    return minors


@dataclass(frozen=True)
class SandboxPolicy:
    uid_first: int = DEFAULT_UID_FIRST
    uid_count: int = DEFAULT_UID_COUNT
    # Paths no workload may see (each becomes an empty read-only tmpfs): the agent's state dir,
    # its home, whatever the operator adds. Work dirs below them are bound back one by one.
    hide: tuple[Path, ...] = ()
    # Paths bound back read-only even below a hidden one: the agent's Python, so `python` runs.
    expose: tuple[Path, ...] = ()
    dev_dir: Path = Path("/dev")
    # GPU UUID -> device minor; GPUs it does not know get no device node (fail closed).
    gpu_minors: Callable[[], Mapping[str, int]] = field(default=dict, compare=False)


def default_policy(
    state_dir: Path,
    *,
    home: str | None = None,
    hide: Sequence[Path] = (),
    uids: tuple[int, int] | None = None,
    gpu_minors: Callable[[], Mapping[str, int]] = dict,
) -> SandboxPolicy:
    """Hide the state dir, the agent's home and ``hide``; expose the agent's Python read-only."""
    hidden = [state_dir.resolve(), *(p.resolve() for p in hide)]
    if home and Path(home).resolve() != Path("/"):
        hidden.append(Path(home).resolve())
    exposed = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), Path(sys.executable).resolve().parent}
    first, count = uids if uids is not None else (DEFAULT_UID_FIRST, DEFAULT_UID_COUNT)
    return SandboxPolicy(
        uid_first=first, uid_count=count, hide=tuple(hidden), expose=tuple(sorted(exposed)), gpu_minors=gpu_minors
    )


class Sandbox:
    """Hands out workload uids and starts commands through the launcher (thread-safe)."""

    def __init__(self, policy: SandboxPolicy) -> None:
        self.policy = policy
        self._lock = threading.Lock()
        self._in_use: set[int] = set()
        self._next = 0

    # -- identities -------------------------------------------------------------------------

    def acquire_uid(self) -> int:
        with self._lock:
            for step in range(self.policy.uid_count):
                offset = (self._next + step) % self.policy.uid_count
                uid = self.policy.uid_first + offset
                if uid not in self._in_use:
                    self._in_use.add(uid)
                    self._next = offset + 1  # round robin: a freed uid rests before it is reused
                    return uid
        raise SandboxError(f"no free workload uid in {self.describe_uids()}")

    def release_uid(self, uid: int) -> None:
        with self._lock:
            self._in_use.discard(uid)

    def describe_uids(self) -> str:
        return f"{self.policy.uid_first}-{self.policy.uid_first + self.policy.uid_count - 1}"

    # -- devices ------------------------------------------------------------------------------

    def devices(self, gpu_uuids: Sequence[str]) -> list[tuple[str, str]]:
        """(name in /dev, host path) of the device nodes this workload may open."""
        dev = self.policy.dev_dir
        if not any(dev.glob("nvidia*")):
            return []
        minors = self.policy.gpu_minors()
        names = [f"nvidia{minors[uuid]}" for uuid in gpu_uuids if uuid in minors]
        if names:
            names += [name for name in GPU_CONTROL_NODES if (dev / name).exists()]
            names += [f"nvidia-caps/{p.name}" for p in sorted((dev / "nvidia-caps").glob("nvidia-cap*"))]
        return [(name, str(dev / name)) for name in names if (dev / name).exists()]

    # -- starting -----------------------------------------------------------------------------

    def prepare_work_dir(self, path: Path, uid: int) -> None:
        """The workload's own directory: 0700, owned by its uid (a re-placed workload's too)."""
        path.mkdir(parents=True, exist_ok=True)
        for root, dirs, files in os.walk(path):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(root, name), uid, uid)
        os.chown(path, uid, uid)
        path.chmod(0o700)

    def spawn(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        uid: int,
        gpu_uuids: Sequence[str],
        stdout: IO[bytes],
    ) -> subprocess.Popen[bytes]:
        """Start ``command`` in a new sandbox; return the leader once the command was executed.

        Raises SandboxError (the launcher could not build the sandbox or exec the command); the
        leader is then reaped. The returned leader is in a session (and process group) of its own.
        """
        devices = self.devices(gpu_uuids)
        # A node not open to everyone needs its group (``video`` on some hosts), never root's.
        groups = sorted({os.stat(path).st_gid for _, path in devices if not _world_rw(path)} - {0})
        ready_r, ready_w = os.pipe()
        spec: dict[str, Any] = {
            "command": list(command),
            "env": dict(env),
            "cwd": str(cwd),
            "uid": uid,
            "gid": uid,
            "groups": groups,
            "hide": [str(p) for p in self.policy.hide],
            "expose": [str(p) for p in self.policy.expose],
            "devices": devices,
            "ready_fd": ready_w,
        }
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(LAUNCHER)],
                stdin=subprocess.PIPE,
                stdout=stdout,
                stderr=subprocess.STDOUT,
                env={"PATH": os.defpath},
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
                pass_fds=(ready_w,),
            )
        except OSError as exc:
            os.close(ready_r)
            raise SandboxError(f"cannot start the sandbox launcher: {exc.strerror or exc}") from None
        finally:
            os.close(ready_w)
        try:
            assert proc.stdin is not None
            try:
                proc.stdin.write(_encode(spec))
                proc.stdin.close()
            except BrokenPipeError:
                pass  # the launcher died at once; its ready pipe says nothing and we report that
            answer = _read_ready(ready_r, READY_TIMEOUT_S)
        finally:
            os.close(ready_r)
        if answer == "ok":
            return proc
        if answer is None:
            _kill_group(proc.pid)
            answer = f"error: the sandbox did not start within {READY_TIMEOUT_S:g}s"
        elif not answer:
            answer = "error: the sandbox launcher died before starting the command"
        proc.wait()
        raise SandboxError(answer.removeprefix("error: "))

    def check(self, work_dir: Path) -> str | None:
        """Why workloads cannot be sandboxed on this host, or None: a real sandboxed start."""
        if not sys.platform.startswith("linux"):
            return f"sandboxing needs Linux namespaces (this is {sys.platform})"
        if os.geteuid() != 0:
            return f"the agent does not run as root (euid {os.geteuid()}): it cannot switch uid or make namespaces"
        last = self.policy.uid_first + self.policy.uid_count - 1
        taken = sorted(f"{e.pw_name} ({e.pw_uid})" for e in pwd.getpwall() if self.policy.uid_first <= e.pw_uid <= last)
        if taken:
            return f"workload uids {self.describe_uids()} overlap users of this host: {', '.join(taken[:5])}"
        uid = self.acquire_uid()
        try:
            self.prepare_work_dir(work_dir, uid)
            with open(os.devnull, "wb") as out:
                proc = self.spawn(
                    [sys.executable, "-I", "-S", "-c", "pass"],
                    env={"PATH": os.defpath},
                    cwd=work_dir,
                    uid=uid,
                    gpu_uuids=[],
                    stdout=out,
                )
                code = proc.wait(timeout=READY_TIMEOUT_S)
        except (SandboxError, OSError, subprocess.TimeoutExpired) as exc:
            return f"a sandboxed test command failed: {exc}"
        finally:
            self.release_uid(uid)
        return None if code == 0 else f"a sandboxed test command exited with {code}"


def _encode(spec: Mapping[str, Any]) -> bytes:
    return json.dumps(spec).encode()


def _world_rw(path: str) -> bool:
    mode = os.stat(path).st_mode
    return bool(mode & stat.S_IROTH and mode & stat.S_IWOTH)


def _read_ready(fd: int, timeout_s: float) -> str | None:
    """The launcher's answer ("ok" or "error: ..."); "" if it closed the pipe silently; None on timeout."""
    deadline = time.monotonic() + timeout_s
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            return data.decode(errors="replace")
        data += chunk


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
