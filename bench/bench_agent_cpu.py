"""The agent's CPU share at a 1 s report loop, measured on the real agent process.

Starts a real control plane (API on SQLite + the local Redis), registers one agent process with
a 4-GPU backend reporting every second, lets it warm up, then reads the agent's user+system CPU
time from /proc over a fixed window. Writes bench/results/agent_cpu.json.

    .venv/bin/python bench/bench_agent_cpu.py [--seconds 60] [--backend sim]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def machine_ticks() -> tuple[int, int]:
    """All CPU ticks and stolen ticks of the machine (/proc/stat), to show what else ran."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(fields[:8]), fields[7]


def busy_share(before: tuple[int, int], after: tuple[int, int], idle_before: int, idle_after: int) -> float:
    total = after[0] - before[0]
    return 0.0 if total <= 0 else 100 * (1 - (idle_after - idle_before) / total)


def idle_ticks() -> int:
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return fields[3] + fields[4]  # idle + iowait


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--warmup", type=float, default=10)
    parser.add_argument("--backend", default="sim")
    parser.add_argument("--extra-agent-env", action="append", default=[], help="NAME=VALUE for the agent")
    parser.add_argument(
        "--fake-nvml", action="store_true", help="with --backend nvml: build the fake libnvidia-ml.so.1 and use it"
    )
    args = parser.parse_args()
    if args.fake_nvml:
        sys.path.insert(0, str(ROOT / "tests"))
        from fakes.nvml.build import build_fake_nvml

        args.extra_agent_env.append(f"LD_LIBRARY_PATH={build_fake_nvml().parent}")
    sys.path.insert(0, str(ROOT))
    from controlplane.config import Settings
    from controlplane.domain.enums import KeyScope
    from controlplane.scenarios import sites_file
    from controlplane.services import admin
    from controlplane.store.db import make_engine, make_session_factory, transaction
    from controlplane.store.migrate import upgrade

    work = Path(tempfile.mkdtemp(prefix="sy-bench-"))
    port = free_port()
    env = {
        **os.environ,
        "SWITCHYARD_DATA_DIR": str(work),
        "SWITCHYARD_DATABASE_URL": f"sqlite:///{work / 'bench.db'}",
        "SWITCHYARD_REDIS_PREFIX": f"sy-bench-{port}",
        "SWITCHYARD_API_PORT": str(port),
        "SWITCHYARD_REPORT_INTERVAL_S": "1",
    }
    settings = Settings(data_dir=work, database_url=env["SWITCHYARD_DATABASE_URL"])
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    with transaction(make_session_factory(engine)) as session:
        admin.create_site(session, name="demo-rack", spec=admin.load_scenario(sites_file(), "demo-rack"))
        _, token = admin.issue_bootstrap_token(
            session, pepper=settings.pepper_bytes(), site_name="demo-rack", rack="rack-001", ttl_s=600
        )
        ops_key = admin.issue_api_key(session, pepper=settings.pepper_bytes(), scope=KeyScope.OPERATOR).secret
    engine.dispose()
    procs: list[subprocess.Popen[bytes]] = []
    logs = contextlib.ExitStack()
    try:
        api = subprocess.Popen(
            [sys.executable, "-m", "controlplane.cli", "api"],
            env=env,
            cwd=ROOT,
            stdout=logs.enter_context(open(work / "api.log", "wb")),  # noqa: SIM115 - closed by the stack
            stderr=subprocess.STDOUT,
        )
        procs.append(api)
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        agent_env = {**env, "SWITCHYARD_AGENT_BOOTSTRAP_TOKEN": token}
        agent_env.update(dict(item.split("=", 1) for item in args.extra_agent_env))
        agent = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agents.daemon",
                "--server",
                url,
                "--state-dir",
                str(work / "agent"),
                "--backend",
                args.backend,
                "--report-interval",
                "1",
                "--metrics-port",
                "0",
            ],
            env=agent_env,
            cwd=ROOT,
            stdout=logs.enter_context(open(work / "agent.log", "wb")),  # noqa: SIM115 - closed by the stack
            stderr=subprocess.STDOUT,
        )
        procs.append(agent)
        time.sleep(args.warmup)
        if agent.poll() is not None:
            print((work / "agent.log").read_text()[-3000:], file=sys.stderr)
            return 1
        agent0, api0, wall0 = cpu_seconds(agent.pid), cpu_seconds(api.pid), time.monotonic()
        ticks0, idle0 = machine_ticks(), idle_ticks()
        time.sleep(args.seconds)
        agent1, api1, wall1 = cpu_seconds(agent.pid), cpu_seconds(api.pid), time.monotonic()
        ticks1, idle1 = machine_ticks(), idle_ticks()
        nodes = httpx.get(f"{url}/v1/operator/nodes", headers={"Authorization": f"Bearer {ops_key}"}).json()
        reports = nodes[0]["reports_accepted"]
    finally:
        logs.close()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
    wall = wall1 - wall0
    result = {
        "what": "agent process CPU (user+system) over a window, 4 GPUs, report every 1 s",
        "backend": args.backend,
        "window_s": round(wall, 1),
        "agent_cpu_pct_of_one_core": round(100 * (agent1 - agent0) / wall, 3),
        "api_cpu_pct_of_one_core": round(100 * (api1 - api0) / wall, 3),
        "reports_accepted_by_control_plane": reports,
        "target_pct": 2.0,
        # The share grows when other work shares the cores (caches, SMT siblings): a loaded
        # machine measured 2-4% where an idle one measures well under 1%, for the same code.
        "machine_busy_pct_of_all_cores": round(busy_share(ticks0, ticks1, idle0, idle1), 1),
        "machine_steal_pct": round(100 * (ticks1[1] - ticks0[1]) / max(1, ticks1[0] - ticks0[0]), 2),
        "loadavg_1m": float(Path("/proc/loadavg").read_text().split()[0]),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = ROOT / "bench" / "results" / f"agent_cpu_{args.backend}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
