"""`switchyard demo`: a whole simulated site on one machine.

Starts Redis (if none is reachable), the API, the scheduler, a worker and beat, and one real
agent process per compute tray of the site (18 for `demo-rack`: 72 simulated GB300 GPUs),
on an SQLite database in the demo's data directory. Then it creates a tenant and its key,
submits a handful of workloads and shows a live table until Ctrl-C, which stops every process
it started.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from controlplane.processes.localredis import LocalRedis, find_or_start, free_port

# A stand-in for a training script: it reads the rendezvous variables the agent sets, prints
# progress and exits with the code it is given.
TRAIN_SCRIPT = """
import os, sys, time
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
steps, code = int(sys.argv[1]), int(sys.argv[2])
print(f"rank {rank}/{world} GPUs {os.environ['CUDA_VISIBLE_DEVICES']} "
      f"master {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}", flush=True)
for step in range(1, steps + 1):
    time.sleep(1)
    if step % 5 == 0:
        print(f"step {step}/{steps} loss {2.0 / step:.4f}", flush=True)
if code:
    print("error: CUDA out of memory (simulated)", file=sys.stderr, flush=True)
sys.exit(code)
"""


@dataclass(frozen=True)
class DemoWorkload:
    name: str
    gpus: int
    steps: int
    nvlink: str = "required"
    priority: str = "on_demand"
    exit_code: int = 0
    utilization: float = 0.9
    delay_s: float = 0.0  # submitted this long after the first batch

    @property
    def expected(self) -> str:
        return "succeeded" if self.exit_code == 0 else "failed"

    def body(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "gpus": self.gpus,
            "nvlink": self.nvlink,
            "priority": self.priority,
            "command": [sys.executable, "-c", TRAIN_SCRIPT, str(self.steps), str(self.exit_code)],
            "env": {"DEMO_JOB": self.name},
            "max_duration_s": 3600,
            "sim_utilization": self.utilization,
        }


DEMO_WORKLOADS = (
    DemoWorkload("hello-1gpu", 1, 15, nvlink="none", utilization=0.35),
    DemoWorkload("finetune-llama-8b", 4, 40, utilization=0.85),
    DemoWorkload("pretrain-moe-16gpu", 16, 60, utilization=0.95),
    DemoWorkload("eval-sweep", 8, 25, priority="spot", utilization=0.6),
    DemoWorkload("rl-rollouts-32gpu", 32, 45, utilization=0.8),
    DemoWorkload("broken-job", 2, 10, exit_code=1, utilization=0.7),
    # Needs the whole rack: pending, with its reason, until the others finish.
    DemoWorkload("full-rack-72gpu", 72, 20, utilization=0.97, delay_s=5),
)


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path


@dataclass
class Demo:
    args: argparse.Namespace
    data_dir: Path
    children: list[Child] = field(default_factory=list)
    redis: LocalRedis | None = None

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        log_dir = self.data_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - handed to the child for its lifetime
        process = subprocess.Popen(
            [sys.executable, "-m", "controlplane.cli", *argv],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches us; we stop children in order
        )
        log.close()
        child = Child(name, process, log_path)
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        # Agents first (they stop their workloads), then the control plane, then Redis.
        order = sorted(self.children, key=lambda c: (not c.name.startswith("agent"), c.name))
        for child in order:
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in order:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                child.process.wait(remaining)
            except subprocess.TimeoutExpired:
                os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait()
        if self.redis is not None:
            self.redis.stop()

    def check_children(self) -> None:
        for child in self.children:
            code = child.process.poll()
            if code is not None:
                tail = child.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{child.name} exited with code {code}; its log ends with:\n{tail}")


def _reset_data_dir(data_dir: Path) -> None:
    """A fresh site each run: remove what an earlier demo left (only our own files)."""
    for name in ("switchyard.db", "switchyard.db-wal", "switchyard.db-shm", "celerybeat-schedule", "pepper"):
        (data_dir / name).unlink(missing_ok=True)
    for name in ("agents", "logs"):
        shutil.rmtree(data_dir / name, ignore_errors=True)
    data_dir.mkdir(parents=True, exist_ok=True)


def main(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).resolve()
    _reset_data_dir(data_dir)
    demo = Demo(args, data_dir)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        return _run(demo, stop)
    except RuntimeError as exc:
        print(f"\nswitchyard demo: {exc}", file=sys.stderr)
        return 1
    finally:
        print("\nstopping every process the demo started ...", flush=True)
        demo.stop_all()
        print("stopped.", flush=True)


def _run(demo: Demo, stop: threading.Event) -> int:
    from controlplane.config import Settings

    args, data_dir = demo.args, demo.data_dir
    base = Settings(data_dir=data_dir)
    demo.redis = find_or_start(base.redis_url, data_dir / "redis")
    port = args.port if args.port else free_port()
    env = {
        **os.environ,
        "SWITCHYARD_DATA_DIR": str(data_dir),
        "SWITCHYARD_DATABASE_URL": f"sqlite:///{data_dir / 'switchyard.db'}",
        "SWITCHYARD_REDIS_URL": demo.redis.url,
        "SWITCHYARD_REDIS_PREFIX": f"sy-demo-{port}",
        "SWITCHYARD_API_PORT": str(port),
        "SWITCHYARD_REPORT_INTERVAL_S": "2",
        "SWITCHYARD_LEASE_TTL_S": "10",
        "SWITCHYARD_SWEEP_INTERVAL_S": "3",
        "SWITCHYARD_SCHEDULER_INTERVAL_S": "2",
        "PYTHONUNBUFFERED": "1",
    }
    settings = Settings(
        data_dir=data_dir,
        database_url=env["SWITCHYARD_DATABASE_URL"],
        redis_url=demo.redis.url,
        redis_prefix=env["SWITCHYARD_REDIS_PREFIX"],
        api_port=port,
    )
    _clear_prefix(settings.redis_url, settings.redis_prefix)
    tenant_key, operator_key, tokens, rack_uuid = _prepare_database(settings, args.site)
    url = settings.public_url
    print(f"Redis: {demo.redis.url} ({'started by the demo' if demo.redis.process else 'found'})")
    print(f"Database: {settings.database_url}")
    demo.spawn("api", ["api", "--port", str(port)], env)
    demo.spawn("scheduler", ["scheduler"], env)
    demo.spawn("worker", ["worker", "--concurrency", "2"], env)
    demo.spawn("beat", ["beat"], env)
    _wait_http(f"{url}/healthz", demo, stop)
    for i, token in enumerate(tokens, start=1):
        hostname = f"{args.site}-tray{i:02d}"
        agent_env = {**env, "SWITCHYARD_AGENT_BOOTSTRAP_TOKEN": token}
        demo.spawn(
            f"agent-{i:02d}",
            [
                "agent",
                "--server",
                url,
                "--state-dir",
                str(data_dir / "agents" / hostname),
                "--backend",
                "sim",
                "--sim-node-index",
                str(i),
                "--sim-cluster-uuid",
                rack_uuid,
                "--hostname",
                hostname,
                "--advertise-addr",
                "127.0.0.1",
                "--metrics-port",
                "0",
            ],
            agent_env,
        )
    ops = {"Authorization": f"Bearer {operator_key}"}
    tenant = {"Authorization": f"Bearer {tenant_key}"}
    with httpx.Client(base_url=url, timeout=10) as http:
        _wait_nodes(http, ops, len(tokens), demo, stop)
        _print_intro(url, tenant_key, operator_key, data_dir)
        submitted = {} if args.no_workloads else _submit(http, tenant, stop)
        return _watch(http, ops, tenant, submitted, demo, stop)


def _clear_prefix(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _prepare_database(settings: Any, site_name: str) -> tuple[str, str, list[str], str]:
    from sqlalchemy import select

    from controlplane.domain.enums import KeyScope
    from controlplane.scenarios import sites_file
    from controlplane.services import admin
    from controlplane.store.db import make_engine, make_session_factory, transaction
    from controlplane.store.migrate import upgrade
    from controlplane.store.models import Rack

    upgrade(settings.database_url)
    pepper = settings.pepper_bytes()
    engine = make_engine(settings.database_url)
    try:
        with transaction(make_session_factory(engine)) as session:
            spec = admin.load_scenario(sites_file(settings.scenarios_dir), site_name)
            site = admin.create_site(session, name=site_name, spec=spec)
            tenant = admin.create_tenant(session, name="demo-tenant")
            tenant_key = admin.issue_api_key(
                session, pepper=pepper, scope=KeyScope.TENANT, name="demo", tenant_id=tenant.id
            ).secret
            operator_key = admin.issue_api_key(session, pepper=pepper, scope=KeyScope.OPERATOR, name="demo").secret
            racks = session.scalars(select(Rack).where(Rack.site_id == site.id).order_by(Rack.name)).all()
            if len(racks) != 1:
                raise RuntimeError(f"the demo runs one rack; site {site_name!r} has {len(racks)}")
            rack = racks[0]
            tokens = [
                admin.issue_bootstrap_token(session, pepper=pepper, site_name=site_name, rack=rack.name, ttl_s=3600)[1]
                for _ in range(rack.nodes_expected)
            ]
            return tenant_key, operator_key, tokens, rack.fabric_cluster_uuid
    finally:
        engine.dispose()


def _wait_http(url: str, demo: Demo, stop: threading.Event, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        demo.check_children()
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the API did not answer at {url}")


def _wait_nodes(http: httpx.Client, ops: dict[str, str], expected: int, demo: Demo, stop: threading.Event) -> None:
    print(f"starting {expected} agents ...", flush=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not stop.is_set():
        demo.check_children()
        nodes = http.get("/v1/operator/nodes", headers=ops).json()
        if len(nodes) >= expected:
            print(f"{len(nodes)} nodes registered, {sum(len(n['gpus']) for n in nodes)} GPUs", flush=True)
            return
        time.sleep(0.5)
    if not stop.is_set():
        raise RuntimeError(f"only some of the {expected} agents registered within 120 s")


def _print_intro(url: str, tenant_key: str, operator_key: str, data_dir: Path) -> None:
    print(
        f"""
Switchyard is up.
  API:          {url}/v1   (OpenAPI: {url}/v1/openapi.json, docs: {url}/v1/docs)
  tenant key:   {tenant_key}
  operator key: {operator_key}
  logs:         {data_dir / "logs"}

Try:
  curl -s -H "Authorization: Bearer {tenant_key}" {url}/v1/workloads
  curl -s -H "Authorization: Bearer {tenant_key}" -H "Content-Type: application/json" \\
       -H "Idempotency-Key: my-first-job" -d '{{"gpus": 4, "command": ["sleep", "30"]}}' {url}/v1/workloads
  curl -s -H "Authorization: Bearer {tenant_key}" {url}/v1/workloads/<id>/logs
  curl -s -H "Authorization: Bearer {operator_key}" {url}/v1/operator/nodes
""",
        flush=True,
    )


def _submit(http: httpx.Client, tenant: dict[str, str], stop: threading.Event) -> dict[str, DemoWorkload]:
    submitted: dict[str, DemoWorkload] = {}
    for wl in sorted(DEMO_WORKLOADS, key=lambda w: w.delay_s):
        if wl.delay_s and stop.wait(wl.delay_s):
            break
        r = http.post("/v1/workloads", json=wl.body(), headers={**tenant, "Idempotency-Key": f"demo-{wl.name}"})
        r.raise_for_status()
        submitted[r.json()["id"]] = wl
        print(f"submitted {wl.name}: {wl.gpus} GPUs -> {r.json()['id']}", flush=True)
    return submitted


def _watch(
    http: httpx.Client,
    ops: dict[str, str],
    tenant: dict[str, str],
    submitted: dict[str, DemoWorkload],
    demo: Demo,
    stop: threading.Event,
) -> int:
    from controlplane.processes.demo_table import render, summarise

    table = not demo.args.no_table and sys.stdout.isatty()
    started = time.monotonic()
    seen: dict[str, str] = {}
    while not stop.is_set():
        demo.check_children()
        nodes = http.get("/v1/operator/nodes", headers=ops).json()
        workloads = http.get("/v1/workloads", params={"limit": 200}, headers=tenant).json()["items"]
        if table:
            sys.stdout.write("\x1b[H\x1b[2J" + render(nodes, workloads) + "\n(Ctrl-C stops everything)\n")
            sys.stdout.flush()
        for w in workloads:
            if seen.get(w["id"]) != w["state"]:
                seen[w["id"]] = w["state"]
                if not table:
                    print(
                        f"{time.monotonic() - started:6.1f}s  {w['name'] or w['id']:<22} {w['state']:<10} "
                        f"{w['reason']}",
                        flush=True,
                    )
        if not table and int(time.monotonic() - started) % 15 == 0:
            print(summarise(nodes), flush=True)
        finished = submitted and all(seen.get(i) in ("succeeded", "failed", "cancelled") for i in submitted)
        if finished and demo.args.duration:
            break
        if demo.args.duration and time.monotonic() - started > demo.args.duration:
            break
        stop.wait(1.0)
    return _verdict(submitted, seen, strict=bool(demo.args.duration))


def _verdict(submitted: dict[str, DemoWorkload], seen: dict[str, str], *, strict: bool) -> int:
    """Non-zero if a demo workload ended in the wrong state (or, with --duration, did not end)."""
    if not submitted:
        return 0
    print("\ndemo workloads:")
    ok = True
    for wl_id, wl in submitted.items():
        state = seen.get(wl_id, "?")
        ended = state in ("succeeded", "failed", "cancelled", "preempted")
        good = state == wl.expected or (not strict and not ended)
        ok &= good
        print(f"  {wl.name:<22} {state:<10} (expected {wl.expected}){'' if good else '  <-- unexpected'}")
    return 0 if ok else 1
