"""No process `switchyard demo` started outlives it, whatever ends it.

Each run waits until the demo workloads run (so there are agents' workload processes to stop
too, and a Redis the demo started), ends the demo one way, and waits for every process of the
run to be gone: the control plane, the 18 agents, their workloads and Redis.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from demo_run import demo_argv, demo_env, kill_leftovers, parent_of, processes_using, workload_processes
from harness import wait_for

STARTED_S = 180.0  # the site up, 18 agents registered, workloads placed and started
GONE_S = 90.0  # an agent's orderly stop takes up to ~30 s; the kernel's death signal starts it at once


class DemoRun:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.data_dir = tmp_path / "demo"
        self.demo: subprocess.Popen[bytes] | None = None
        self.reader: subprocess.Popen[bytes] | None = None  # `tee`, for the pipeline cases

    def start(self, *options: str, stdout: int | None = None) -> subprocess.Popen[bytes]:
        out = stdout if stdout is not None else os.open(self.tmp_path / "demo.out", os.O_WRONLY | os.O_CREAT)
        self.demo = subprocess.Popen(
            demo_argv(self.data_dir, "--duration", "600", *options),
            env=demo_env(self.tmp_path),
            stdout=out,
            stderr=subprocess.STDOUT if stdout is None else None,
            stdin=subprocess.DEVNULL,
            process_group=0,  # a process group of its own, as a shell makes for a job
        )
        if stdout is None:
            os.close(out)
        return self.demo

    def wait_running(self) -> None:
        def running() -> bool:
            assert self.demo is not None and self.demo.poll() is None, self.output()
            return bool(workload_processes(self.data_dir))

        wait_for(running, timeout=STARTED_S, what="the demo workloads to run")
        commands = processes_using(self.data_dir).values()
        assert any("redis" in c or "valkey" in c for c in commands), "the demo did not start its own Redis"

    def submit(self, body: dict[str, Any]) -> None:
        """Submit a workload of our own with the tenant key the demo printed."""
        printed = wait_for(
            lambda: re.search(r"API:\s+(\S+)/v1.*?tenant key:\s+(\S+)", self.output(), re.S),
            timeout=STARTED_S,
            what="the demo to print its tenant key",
        )
        url, key = printed.group(1), printed.group(2)
        r = httpx.post(f"{url}/v1/workloads", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert r.status_code == 201, r.text

    def wait_all_gone(self) -> None:
        deadline = time.monotonic() + GONE_S
        while (left := processes_using(self.data_dir)) and time.monotonic() < deadline:
            time.sleep(0.25)
        assert left == {}, f"still running {GONE_S:g} s after the demo was told to stop: {left}"

    def output(self) -> str:
        path = self.tmp_path / "demo.out"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def close(self) -> None:
        for proc in (self.reader, self.demo):
            if proc is not None and proc.poll() is None:
                proc.kill()
            if proc is not None:
                proc.wait()
        kill_leftovers(self.data_dir)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[DemoRun]:
    r = DemoRun(tmp_path)
    try:
        yield r
    finally:
        r.close()


def _signal(sig: signal.Signals) -> Callable[[DemoRun], None]:
    def deliver(run: DemoRun) -> None:
        run.start()
        run.wait_running()
        assert run.demo is not None
        run.demo.send_signal(sig)

    return deliver


def _ctrl_c_on_a_tee_pipeline(run: DemoRun) -> None:
    """`switchyard demo | tee demo.log`, Ctrl-C: SIGINT to the job's group kills tee as well."""
    read_end, write_end = os.pipe()
    demo = run.start(stdout=write_end)
    os.close(write_end)
    run.reader = subprocess.Popen(
        ["tee", str(run.tmp_path / "demo.out")],
        stdin=read_end,
        stdout=subprocess.DEVNULL,
        process_group=demo.pid,
    )
    os.close(read_end)
    run.wait_running()
    os.killpg(demo.pid, signal.SIGINT)


def _an_agent_hangs(run: DemoRun) -> None:
    """An agent frozen (SIGSTOP) while its workload runs cannot stop it: the demo must.

    The workload is one of ours that would run for ten minutes, so it cannot end on its own.
    """
    run.start("--no-workloads")
    run.submit({"name": "sleeper", "gpus": 1, "nvlink": "none", "command": ["sleep", "600"]})
    run.wait_running()
    # Sandboxed (as root) the workload is the launcher, its namespace's init and `sleep`: the
    # leader is the one whose parent is not a workload process, and that parent is the agent.
    processes = workload_processes(run.data_dir)
    (leader,) = [pid for pid in processes if parent_of(pid) not in processes]
    os.kill(parent_of(leader), signal.SIGSTOP)
    assert run.demo is not None
    run.demo.send_signal(signal.SIGTERM)


def _reader_goes_away(run: DemoRun) -> None:
    """Whoever read the demo's output is gone: its next line meets a broken pipe."""
    read_end, write_end = os.pipe()
    run.start(stdout=write_end)
    os.close(write_end)
    run.wait_running()
    os.close(read_end)


HOW = {
    "sigint-to-a-tee-pipeline": _ctrl_c_on_a_tee_pipeline,
    "sigterm": _signal(signal.SIGTERM),
    "sighup-terminal-closed": _signal(signal.SIGHUP),
    "broken-stdout-pipe": _reader_goes_away,
    "sigkill-of-the-demo": _signal(signal.SIGKILL),
    "sigterm-with-a-hung-agent": _an_agent_hangs,
}


@pytest.mark.parametrize("how", sorted(HOW))
def test_no_process_outlives_the_demo(run: DemoRun, how: str) -> None:
    HOW[how](run)
    run.wait_all_gone()
    assert run.demo is not None
    run.demo.wait(30)
    assert processes_using(run.data_dir) == {}
