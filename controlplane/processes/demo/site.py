"""Bring the simulated site up: Redis, a fresh database, the control plane, one agent per tray.

Every child goes through the ``Supervisor`` (so none outlives the demo) and every wait through
the ``RunClock`` (so a Ctrl-C or the end of --duration during start-up is honoured at once).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import httpx

from controlplane.processes.demo import redis_server
from controlplane.processes.demo.clock import RunClock
from controlplane.processes.demo.console import Console
from controlplane.processes.demo.seed import Seeded, clear_prefix, prepare_database
from controlplane.processes.demo.supervisor import Stage, Supervisor, cli
from controlplane.processes.localredis import free_port

API_START_S = 60.0
AGENTS_REGISTER_S = 120.0


class StartFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Site:
    url: str
    seeded: Seeded
    agents: int

    @property
    def operator(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.seeded.operator_key}"}

    @property
    def tenant(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.seeded.tenant_key}"}


def start_site(
    *, site_name: str, port: int, data_dir: Path, supervisor: Supervisor, clock: RunClock, console: Console
) -> Site | None:
    """The running site, or None if the run ended before it was up."""
    from controlplane.config import Settings

    base = Settings(data_dir=data_dir)
    redis_url, redis_child = redis_server.find_or_start(base.redis_url, data_dir / "redis", supervisor)
    port = port or free_port()
    env = {
        **os.environ,
        "SWITCHYARD_DATA_DIR": str(data_dir),
        "SWITCHYARD_DATABASE_URL": f"sqlite:///{data_dir / 'switchyard.db'}",
        "SWITCHYARD_REDIS_URL": redis_url,
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
        redis_url=redis_url,
        redis_prefix=env["SWITCHYARD_REDIS_PREFIX"],
        api_port=port,
    )
    clear_prefix(settings.redis_url, settings.redis_prefix)
    seeded = prepare_database(settings, site_name)
    console.say(f"Redis: {redis_url} ({'started by the demo' if redis_child else 'found'})")
    console.say(f"Database: {settings.database_url}")
    supervisor.spawn("api", cli("api", "--port", str(port)), env, stage=Stage.CONTROL_PLANE)
    supervisor.spawn("scheduler", cli("scheduler"), env, stage=Stage.CONTROL_PLANE)
    supervisor.spawn("worker", cli("worker", "--concurrency", "2"), env, stage=Stage.CONTROL_PLANE)
    supervisor.spawn("beat", cli("beat"), env, stage=Stage.CONTROL_PLANE)
    url = settings.public_url
    if not _wait_api(url, supervisor, clock):
        return None
    sandbox = _sandbox_options(data_dir)
    console.say(
        "Workloads: sandboxed (a uid of their own, own PID and mount namespaces)"
        if sandbox[0] != "--insecure-no-sandbox"
        else f"Workloads: NOT sandboxed (the demo runs as uid {os.geteuid()}, not root): they run as you"
    )
    for i, token in enumerate(seeded.bootstrap_tokens, start=1):
        hostname = f"{site_name}-tray{i:02d}"
        state_dir = data_dir / "agents" / hostname
        argv = cli(
            "agent",
            *("--server", url, "--state-dir", str(state_dir), "--backend", "sim"),
            *("--sim-node-index", str(i), "--sim-cluster-uuid", seeded.rack_fabric_uuid),
            *("--hostname", hostname, "--advertise-addr", "127.0.0.1", "--metrics-port", "0"),
            *sandbox,
        )
        agent_env = {**env, "SWITCHYARD_AGENT_BOOTSTRAP_TOKEN": token}
        supervisor.spawn(f"agent-{i:02d}", argv, agent_env, stage=Stage.AGENT, state_dir=state_dir)
    site = Site(url, seeded, len(seeded.bootstrap_tokens))
    return site if _wait_agents(site, supervisor, clock, console) else None


def _sandbox_options(data_dir: Path) -> tuple[str, ...]:
    """Root: agents sandbox the workloads and also hide the demo's own data dir (database, pepper).

    Anyone else: the agents cannot switch uid or make namespaces, and would refuse tenant work;
    the demo is a development tool run by whoever runs it, so it says so and runs them unconfined.
    """
    if os.geteuid() == 0:
        return ("--sandbox-hide", str(data_dir.resolve()))
    return ("--insecure-no-sandbox",)


def _wait_api(url: str, supervisor: Supervisor, clock: RunClock) -> bool:
    waited = RunClock(API_START_S)
    while not clock.over():
        supervisor.check()
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if waited.expired():
            raise StartFailed(f"the API did not answer at {url} within {API_START_S:g} s")
        clock.pause(0.2)
    return False


def _wait_agents(site: Site, supervisor: Supervisor, clock: RunClock, console: Console) -> bool:
    console.say(f"starting {site.agents} agents ...")
    waited = RunClock(AGENTS_REGISTER_S)
    with httpx.Client(base_url=site.url, timeout=10) as http:
        while not clock.over():
            supervisor.check()
            nodes = http.get("/v1/operator/nodes", headers=site.operator).json()
            if len(nodes) >= site.agents:
                console.say(f"{len(nodes)} nodes registered, {sum(len(n['gpus']) for n in nodes)} GPUs")
                return True
            if waited.expired():
                raise StartFailed(f"only {len(nodes)} of the {site.agents} agents registered within 120 s")
            clock.pause(0.5)
    return False
