"""`switchyard demo` as a user runs it, with a Redis it must start itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from harness import free_port


def test_demo_brings_the_site_up_and_its_workloads_finish(tmp_path: Path) -> None:
    env = {
        **os.environ,
        # Nothing listens here, so the demo must start its own Redis server.
        "SWITCHYARD_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "SWITCHYARD_DATA_DIR": str(tmp_path / "unused"),
    }
    env.pop("SWITCHYARD_DATABASE_URL", None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "controlplane.cli",
            "demo",
            "--no-table",
            "--duration",
            "300",
            "--port",
            str(free_port()),
            "--data-dir",
            str(tmp_path / "demo"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-5000:]
    assert "started by the demo" in out and "18 nodes registered, 72 GPUs" in out
    for name in ("hello-1gpu", "pretrain-moe-16gpu", "full-rack-72gpu"):
        assert f"{name:<22} succeeded" in out, out[-3000:]
    assert f"{'broken-job':<22} failed" in out
    assert "stopped." in out
    # Every process it started is gone: nothing still holds the demo's SQLite file open.
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "demo")], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", leftovers.stdout
