"""Time from a tenant's submission to the agent being told, on the demo rack.

Real API and scheduler processes (SQLite + the local Redis), 18 nodes registered over the real
agent protocol; each node is a thread running the agent's own client (agents.client) in the
desired-state long poll, exactly as the daemon does. The bench submits 4-GPU workloads one at a
time, stamps the submission just before the POST, and stamps the moment a node's long poll
returns the assignment; the node then reports the process finished so the GPUs free. Writes
bench/results/notify_latency.json.

    .venv/bin/python bench/bench_notify_latency.py [--samples 200]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    from factories import inventory

    from agents.client import AgentClient
    from agents.protocol import PROTOCOL_VERSION, AssignmentPhase, AssignmentStatus, RegisterRequest, ReportRequest
    from controlplane.config import Settings
    from controlplane.domain.enums import KeyScope
    from controlplane.scenarios import sites_file
    from controlplane.services import admin
    from controlplane.store.db import make_engine, make_session_factory, transaction
    from controlplane.store.migrate import upgrade

    work = Path(tempfile.mkdtemp(prefix="sy-latency-"))
    port = _free_port()
    env = {
        **os.environ,
        "SWITCHYARD_DATA_DIR": str(work),
        "SWITCHYARD_DATABASE_URL": f"sqlite:///{work / 'l.db'}",
        "SWITCHYARD_REDIS_PREFIX": f"sy-latency-{port}",
        "SWITCHYARD_API_PORT": str(port),
    }
    settings = Settings(data_dir=work, database_url=env["SWITCHYARD_DATABASE_URL"])
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    with transaction(make_session_factory(engine)) as session:
        admin.create_site(
            session,
            name="demo-rack",
            spec=admin.load_scenario(sites_file(), "demo-rack"),
        )
        tenant = admin.create_tenant(session, name="bench")
        pepper = settings.pepper_bytes()
        key = admin.issue_api_key(session, pepper=pepper, scope=KeyScope.TENANT, tenant_id=tenant.id).secret
        tokens = [
            admin.issue_bootstrap_token(session, pepper=pepper, site_name="demo-rack", rack="rack-001", ttl_s=600)[1]
            for _ in range(18)
        ]
    engine.dispose()
    url = f"http://127.0.0.1:{port}"
    notified: dict[str, float] = {}
    stop = threading.Event()
    with contextlib.ExitStack() as stack:
        procs = []
        for name in ("api", "scheduler"):
            log = stack.enter_context(open(work / f"{name}.log", "wb"))  # noqa: SIM115 - closed by the stack
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "controlplane.cli", name],
                    env=env,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        try:
            for _ in range(100):
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                time.sleep(0.1)

            def node(index: int, token: str) -> None:
                client = AgentClient(url)
                reg = client.register(
                    RegisterRequest(
                        protocol_version=PROTOCOL_VERSION, bootstrap_token=token, inventory=inventory(index)
                    )
                )
                client = AgentClient(url, credential=reg.credential)
                generation, seq = 0, 0
                while not stop.is_set():
                    state = client.desired(reg.node_id, after=generation, wait_s=5)
                    now = time.perf_counter()
                    generation = state.generation
                    done = []
                    for a in state.assignments:
                        notified.setdefault(a.workload_id, now)
                        done.append(
                            AssignmentStatus(
                                workload_id=a.workload_id,
                                epoch=a.epoch,
                                rank=a.rank,
                                phase=AssignmentPhase.EXITED,
                                exit_code=0,
                            )
                        )
                    seq += 1
                    client.report(
                        reg.node_id,
                        ReportRequest(
                            protocol_version=PROTOCOL_VERSION,
                            seq=seq,
                            sent_at=time.time(),
                            gpus=[],
                            assignments=done,
                            applied_generation=generation,
                        ),
                    )

            threads = [threading.Thread(target=node, args=(i + 1, t), daemon=True) for i, t in enumerate(tokens)]
            for t in threads:
                t.start()
            time.sleep(3)
            http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
            latencies = []
            for n in range(args.samples + 10):
                started = time.perf_counter()
                wl = http.post("/v1/workloads", json={"gpus": 4, "command": ["true"]}).json()["id"]
                deadline = time.monotonic() + 30
                while wl not in notified and time.monotonic() < deadline:
                    time.sleep(0.0005)
                if wl in notified and n >= 10:  # the first ten warm the processes up
                    latencies.append((notified[wl] - started) * 1000)
        finally:
            stop.set()
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(15)
    latencies.sort()
    result = {
        "what": "tenant POST /v1/workloads -> the node's desired-state long poll returns the assignment",
        "samples": len(latencies),
        "p50_ms": round(statistics.median(latencies), 1),
        "p90_ms": round(latencies[int(0.9 * len(latencies))], 1),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1),
        "max_ms": round(latencies[-1], 1),
        "setup": "API + scheduler processes, SQLite, local Redis, 18 nodes long-polling with agents.client",
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (ROOT / "bench" / "results" / "notify_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
