"""Running `switchyard demo` from the tests, and finding every process it left behind.

A process belongs to a demo run if its command line, working directory or environment names
the run's data directory: the demo itself (--data-dir), the control plane (SWITCHYARD_DATA_DIR),
the agents (--state-dir), the Redis it started (--dir) and the agents' workloads (their working
directory is under the agents' state directories).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

from harness import free_port

PROC = Path("/proc")


def demo_argv(data_dir: Path, *options: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "controlplane.cli",
        "demo",
        "--no-table",
        "--port",
        str(free_port()),
        "--data-dir",
        str(data_dir),
        *options,
    ]


def demo_env(tmp_path: Path) -> dict[str, str]:
    """The user's environment, with no Redis where the demo looks: it must start its own."""
    env = {
        **os.environ,
        "SWITCHYARD_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "SWITCHYARD_DATA_DIR": str(tmp_path / "unused"),
    }
    env.pop("SWITCHYARD_DATABASE_URL", None)
    return env


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return b""


def _cwd(pid: int) -> str:
    try:
        return os.readlink(PROC / str(pid) / "cwd")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""


def processes_using(data_dir: Path) -> dict[int, str]:
    """Live processes of this run: pid -> command line."""
    needle = str(data_dir)
    found = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        cmdline = _read(entry / "cmdline").replace(b"\0", b" ").decode(errors="replace").strip()
        if not cmdline:
            continue  # a zombie, or gone meanwhile: holds nothing
        environ = _read(entry / "environ").decode(errors="replace")
        if needle in cmdline or needle in environ or _cwd(pid).startswith(needle):
            found[pid] = cmdline
    return found


def workload_processes(data_dir: Path) -> dict[int, str]:
    """The demo workloads' processes: their working directory is under an agent's state directory."""
    agents = str(data_dir / "agents")
    return {pid: cmd for pid, cmd in processes_using(data_dir).items() if _cwd(pid).startswith(agents)}


def parent_of(pid: int) -> int:
    for line in _read(PROC / str(pid) / "status").decode().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise LookupError(f"no process {pid}")


def kill_leftovers(data_dir: Path) -> None:
    for pid in processes_using(data_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
