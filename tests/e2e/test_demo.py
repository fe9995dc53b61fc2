"""`switchyard demo` as a user runs it, with a Redis it must start itself."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from demo_run import demo_argv, demo_env, processes_using

ENDED = ("succeeded", "failed", "cancelled", "preempted")


@dataclass
class Observer:
    """Reads the demo's output as it comes and, once the demo prints its keys, checks the APIs.

    Each poll reads the GPUs first and the workloads second: a workload already running before
    the GPUs were read and still running after must hold all of its GPUs (none of them free). A
    workload seen ended must have finished when its history says it ended.
    """

    demo: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    polls: int = 0
    checked_ends: set[str] = field(default_factory=set)

    def read(self) -> None:
        assert self.demo.stdout is not None
        for line in self.demo.stdout:
            self.lines.append(line)

    def _printed(self, pattern: str) -> str | None:
        for line in list(self.lines):
            m = re.search(pattern, line)
            if m:
                return m.group(1)
        return None

    def poll(self) -> None:
        while self.demo.poll() is None and (operator_key := self._printed(r"operator key:\s+(\S+)")) is None:
            time.sleep(0.2)
        url, tenant_key = self._printed(r"API:\s+(\S+)/v1"), self._printed(r"tenant key:\s+(\S+)")
        if url is None or tenant_key is None:
            return
        ops = {"Authorization": f"Bearer {operator_key}"}
        tenant = {"Authorization": f"Bearer {tenant_key}"}
        with httpx.Client(base_url=url, timeout=5) as http:
            while self.demo.poll() is None:
                try:
                    self._check(http, ops, tenant)
                except httpx.HTTPError:
                    return  # the demo is stopping
                time.sleep(0.2)

    def _check(self, http: httpx.Client, ops: dict[str, str], tenant: dict[str, str]) -> None:
        gpus_read_at = datetime.now(UTC)
        free = {g["uuid"] for g in http.get("/v1/operator/gpus", headers=ops).json() if g["state"] == "free"}
        workloads: list[dict[str, Any]] = http.get("/v1/workloads", params={"limit": 200}, headers=tenant).json()[
            "items"
        ]
        self.polls += 1
        for w in workloads:
            started = w["started_at"] and datetime.fromisoformat(w["started_at"])
            if w["state"] == "running" and started and started < gpus_read_at and w["allocation"]:
                held = {u for r in w["allocation"]["ranks"] for u in r["gpu_uuids"]}
                if held & free:
                    self.violations.append(f"{w['name']} running with {len(held & free)} of its GPUs free")
            if w["state"] in ENDED and w["id"] not in self.checked_ends:
                self.checked_ends.add(w["id"])
                detail = http.get(f"/v1/workloads/{w['id']}", headers=tenant).json()
                ends = [h["at"] for h in detail["history"] if h["to_state"] in ENDED]
                if [datetime.fromisoformat(detail["finished_at"])] != [datetime.fromisoformat(at) for at in ends]:
                    self.violations.append(f"{w['name']}: finished_at {detail['finished_at']}, ended at {ends}")


def test_demo_brings_the_site_up_and_stops_once_its_workloads_are_done(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        demo_argv(tmp_path / "demo", "--until-done", "--duration", "300"),
        env=demo_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    observer = Observer(demo)
    threads = [threading.Thread(target=observer.read), threading.Thread(target=observer.poll)]
    for t in threads:
        t.start()
    try:
        code = demo.wait(420)
    finally:
        if demo.poll() is None:
            demo.kill()
        for t in threads:
            t.join(30)
    out = "".join(observer.lines)
    assert code == 0, out[-5000:]
    assert "started by the demo" in out and "18 nodes registered, 72 GPUs" in out
    for name in ("hello-1gpu", "pretrain-moe-16gpu", "full-rack-72gpu"):
        assert f"{name:<22} succeeded" in out, out[-3000:]
    assert f"{'broken-job':<22} failed" in out
    assert "every demo workload has ended" in out
    # A gang's GPUs are never free while it reads running; finished_at is when it ended.
    assert observer.polls > 50 and len(observer.checked_ends) == 7, (observer.polls, observer.checked_ends)
    assert observer.violations == [], observer.violations
    # Every process it started is gone, its Redis and the agents' workloads too.
    assert processes_using(tmp_path / "demo") == {}


def test_duration_runs_that_long_then_stops_everything(tmp_path: Path) -> None:
    """--duration is the length of the run: workloads still going then are fine, not a failure."""
    result = subprocess.run(
        demo_argv(tmp_path / "demo", "--duration", "35"),
        env=demo_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-5000:]
    assert "--duration 35 s is up" in out, out[-3000:]
    # Stopped while the long workloads still ran: listed as they were, none flagged.
    assert re.search(r"pretrain-moe-16gpu\s+(running|starting|scheduled)", out), out[-3000:]
    assert "unexpected" not in out
    assert processes_using(tmp_path / "demo") == {}
