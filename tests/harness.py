"""Real processes for end-to-end tests: the control plane's four and one agent per node."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

# Agent processes the `site` fixture starts: 24 simulated GB300 GPUs in one NVLink domain.
NODES = 6


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Site:
    workdir: Path
    env: dict[str, str]
    url: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *argv: str, extra_env: dict[str, str] | None = None) -> None:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - owned by the child
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "controlplane.cli", *argv],
            env={**self.env, **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        proc = self.processes.pop(name)
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return proc.returncode

    def stop_all(self) -> None:
        for name in sorted(self.processes, key=lambda n: not n.startswith("agent")):
            self.stop(name)

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log(name)[-3000:]}")


def wait_for(predicate: Callable[[], Any], *, timeout: float, site: Site | None = None, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if site is not None:
            site.check_alive()
        try:
            last = predicate()
        except httpx.HTTPError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last value: {last!r}")


def registered_nodes(http: httpx.Client, ops: dict[str, str], count: int, site: Site) -> list[dict[str, Any]]:
    def ready() -> list[dict[str, Any]] | None:
        found: list[dict[str, Any]] = http.get("/v1/operator/nodes", headers=ops).json()
        return found if len(found) == count else None

    nodes: list[dict[str, Any]] = wait_for(ready, timeout=60, site=site, what=f"{count} agents to register")
    return nodes


def wait_all_gpus_free(http: httpx.Client, ops: dict[str, str], site: Site) -> list[dict[str, Any]]:
    def all_free() -> list[dict[str, Any]] | None:
        found: list[dict[str, Any]] = http.get("/v1/operator/gpus", headers=ops).json()
        return found if all(g["state"] == "free" for g in found) else None

    gpus: list[dict[str, Any]] = wait_for(all_free, timeout=30, site=site, what="every GPU free")
    return gpus


def process_env(
    workdir: Path, *, db_url: str, redis_url: str, redis_prefix: str, pepper: str, port: int
) -> dict[str, str]:
    """The environment every control-plane and agent process of a test site starts with."""
    return {
        "PATH": "/usr/bin:/bin:" + str(Path(sys.executable).parent),
        "HOME": str(workdir),
        "PYTHONUNBUFFERED": "1",
        "SWITCHYARD_DATA_DIR": str(workdir / "data"),
        "SWITCHYARD_DATABASE_URL": db_url,
        "SWITCHYARD_REDIS_URL": redis_url,
        "SWITCHYARD_REDIS_PREFIX": redis_prefix,
        "SWITCHYARD_PEPPER": pepper,
        "SWITCHYARD_API_PORT": str(port),
        "SWITCHYARD_REPORT_INTERVAL_S": "1",
        "SWITCHYARD_LEASE_TTL_S": "5",
        "SWITCHYARD_SWEEP_INTERVAL_S": "2",
        "SWITCHYARD_SCHEDULER_INTERVAL_S": "1",
    }


def start_sim_agent(site: Site, index: int, token: str, *extra: str, cluster_uuid: str | None = None) -> None:
    """One real agent process on the simulated GB300 backend, registering with ``token``."""
    argv = ["agent", "--server", site.url, "--state-dir", str(site.workdir / f"agent-{index}")]
    argv += ["--backend", "sim", "--sim-node-index", str(index), "--hostname", f"tray{index:02d}"]
    if cluster_uuid is not None:
        argv += ["--sim-cluster-uuid", cluster_uuid]
    site.start(f"agent-{index}", *argv, *extra, extra_env={"SWITCHYARD_AGENT_BOOTSTRAP_TOKEN": token})
