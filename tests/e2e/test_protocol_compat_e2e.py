"""A rolling upgrade with real processes: each side of protocol 1 against the other's newest.

The protocol-1 processes run from ``git archive de23016`` (``protocol_v1.v1_tree``), with their
own ``cwd`` and ``PYTHONPATH`` so they import their own ``agents`` and ``controlplane``:

- version-1 agents against today's API and scheduler (PostgreSQL): one registers itself, one
  takes over the state dir a newer agent registered (an agent rolled back in place), and both
  run a workload to ``succeeded``;
- today's agent against the version-1 API and scheduler (SQLite, migrated and seeded with that
  version's own CLI): it registers by stepping down to protocol 1, restarts on its stored
  credential and steps down again, and runs a workload to ``succeeded``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import Site, free_port, wait_for
from protocol_v1 import REPO, v1_tree
from testenv import PEPPER, REDIS_URL, pg_database

from agents.client import agent_version
from agents.protocol import PROTOCOL_VERSION

# What a version-1 agent logs when it could not read an answer, or gave up on a report.
AGENT_TROUBLE = ("unexpected response body", "not delivered", "Traceback")
HELLO = "import sys; print('hello from', sys.argv[1], flush=True)"


def _start(site: Site, name: str, *argv: str, cwd: Path, extra_env: dict[str, str] | None = None) -> None:
    """``Site.start`` from a given source tree (``cwd`` comes first on ``sys.path`` with ``-m``)."""
    log = open(site.workdir / f"{name}.log", "wb")  # noqa: SIM115 - owned by the child
    site.processes[name] = subprocess.Popen(
        [sys.executable, "-m", "controlplane.cli", *argv],
        cwd=cwd,
        env={**site.env, **(extra_env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()


def _agent_argv(site: Site, state_dir: Path, index: int) -> list[str]:
    from controlplane.services.admin import rack_fabric_uuid

    return [
        "agent",
        "--server",
        site.url,
        "--state-dir",
        str(state_dir),
        "--backend",
        "sim",
        "--sim-node-index",
        str(index),
        "--sim-cluster-uuid",
        rack_fabric_uuid("demo-rack", "rack-001"),
        "--hostname",
        f"tray{index:02d}",
    ]


def _base_env(tmp_path: Path, redis_prefix: str, port: int, database_url: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin:" + str(Path(sys.executable).parent),
        "HOME": str(tmp_path),
        "PYTHONUNBUFFERED": "1",
        "SWITCHYARD_DATA_DIR": str(tmp_path / "data"),
        "SWITCHYARD_DATABASE_URL": database_url,
        "SWITCHYARD_REDIS_URL": REDIS_URL,
        "SWITCHYARD_REDIS_PREFIX": redis_prefix,
        "SWITCHYARD_PEPPER": PEPPER,
        "SWITCHYARD_API_PORT": str(port),
        "SWITCHYARD_REPORT_INTERVAL_S": "1",
        "SWITCHYARD_LEASE_TTL_S": "5",
        "SWITCHYARD_SWEEP_INTERVAL_S": "2",
        "SWITCHYARD_SCHEDULER_INTERVAL_S": "1",
    }


def _wait_api(site: Site) -> None:
    wait_for(
        lambda: httpx.get(f"{site.url}/healthz", timeout=1).status_code == 200, timeout=30, site=site, what="the API"
    )


def _run_workloads(site: Site, http: httpx.Client, tenant: dict[str, str], jobs: list[str]) -> list[dict[str, Any]]:
    """Submit one 4-GPU workload per job name; wait until all finish; each must succeed and log."""
    ids = []
    for job in jobs:
        body = {"name": job, "gpus": 4, "nvlink": "required", "command": [sys.executable, "-c", HELLO, job]}
        r = http.post("/v1/workloads", json=body, headers={**tenant, "Idempotency-Key": job})
        assert r.status_code == 201, r.text
        ids.append(str(r.json()["id"]))

    def finished() -> list[dict[str, Any]] | None:
        got = [http.get(f"/v1/workloads/{w}", headers=tenant).json() for w in ids]
        return got if all(g["state"] in ("succeeded", "failed", "cancelled") for g in got) else None

    done: list[dict[str, Any]] = wait_for(finished, timeout=60, site=site, what=f"workloads {jobs} to finish")

    def logged(workload_id: str, job: str) -> bool:
        return f"hello from {job}" in http.get(f"/v1/workloads/{workload_id}/logs", headers=tenant).text

    for wl, job in zip(done, jobs, strict=True):
        assert wl["state"] == "succeeded", wl
        wait_for(partial(logged, wl["id"], job), timeout=20, site=site, what=f"the log of {job}")
    return done


@pytest.fixture
def v1_source(tmp_path: Path) -> Path:
    return v1_tree(tmp_path / "v1")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    from controlplane.store.migrate import upgrade

    name = f"switchyard_e2e_{uuid.uuid4().hex[:8]}"
    url = pg_database(name, drop=False)
    upgrade(url)
    yield url
    pg_database(name, drop=True)


def test_version_1_agents_run_workloads_on_this_control_plane(
    tmp_path: Path, redis_prefix: str, v1_source: Path, postgres_url: str
) -> None:
    from factories import demo_spec

    from controlplane.config import Settings
    from controlplane.domain.enums import KeyScope
    from controlplane.services import admin
    from controlplane.store.db import make_engine, make_session_factory, transaction

    pepper = Settings(database_url=postgres_url, redis_url=REDIS_URL, pepper=PEPPER).pepper_bytes()
    engine = make_engine(postgres_url)
    with transaction(make_session_factory(engine)) as session:
        admin.create_site(session, name="demo-rack", spec=demo_spec())
        tenant_id = admin.create_tenant(session, name="acme").id
        tenant_key = admin.issue_api_key(session, pepper=pepper, scope=KeyScope.TENANT, tenant_id=tenant_id).secret
        ops_key = admin.issue_api_key(session, pepper=pepper, scope=KeyScope.OPERATOR).secret
        tokens = [
            admin.issue_bootstrap_token(session, pepper=pepper, site_name="demo-rack", rack="rack-001", ttl_s=600)[1]
            for _ in range(2)
        ]
    engine.dispose()
    port = free_port()
    site = Site(
        workdir=tmp_path, env=_base_env(tmp_path, redis_prefix, port, postgres_url), url=f"http://127.0.0.1:{port}"
    )
    tenant, ops = {"Authorization": f"Bearer {tenant_key}"}, {"Authorization": f"Bearer {ops_key}"}
    v1_env = {"PYTHONPATH": str(v1_source)}
    http = httpx.Client(base_url=site.url, timeout=10)
    try:
        _start(site, "api", "api", cwd=REPO)
        _start(site, "scheduler", "scheduler", cwd=REPO)
        _wait_api(site)
        _start(
            site,
            "agent-1-v1",
            *_agent_argv(site, tmp_path / "agent-1", 1),
            cwd=v1_source,
            extra_env={**v1_env, "SWITCHYARD_AGENT_BOOTSTRAP_TOKEN": tokens[0]},
        )
        _start(
            site,
            "agent-2",
            *_agent_argv(site, tmp_path / "agent-2", 2),
            cwd=REPO,
            extra_env={"SWITCHYARD_AGENT_BOOTSTRAP_TOKEN": tokens[1]},
        )

        def versions() -> dict[str, tuple[int | None, str | None]]:
            nodes = http.get("/v1/operator/nodes", headers=ops).json()
            return {n["hostname"]: (n["protocol_version"], n["agent_version"]) for n in nodes}

        expected = {"tray01": (1, None), "tray02": (PROTOCOL_VERSION, agent_version())}
        wait_for(lambda: versions() == expected, timeout=60, site=site, what=f"both agents registered as {expected}")
        # tray02's agent is rolled back in place: the version-1 agent reads the credential it left.
        assert site.stop("agent-2") == 0
        _start(site, "agent-2-v1", *_agent_argv(site, tmp_path / "agent-2", 2), cwd=v1_source, extra_env=v1_env)
        expected = {"tray01": (1, None), "tray02": (1, None)}
        wait_for(lambda: versions() == expected, timeout=30, site=site, what="tray02's rolled-back agent to report")

        done = _run_workloads(site, http, tenant, ["first", "second"])
        nodes = {n["id"]: n["hostname"] for n in http.get("/v1/operator/nodes", headers=ops).json()}
        ran_on = {nodes[wl["allocation"]["ranks"][0]["node_id"]] for wl in done}
        assert ran_on == {"tray01", "tray02"}, ran_on
        for agent in ("agent-1-v1", "agent-2-v1"):
            log = site.log(agent)
            assert "node_id=node_" in log, log[-3000:]
            assert not [t for t in AGENT_TROUBLE if t in log], log[-5000:]
    finally:
        http.close()
        site.stop_all()


def test_this_agent_runs_a_workload_on_a_version_1_control_plane(
    tmp_path: Path, redis_prefix: str, v1_source: Path
) -> None:
    port = free_port()
    env = _base_env(tmp_path, redis_prefix, port, f"sqlite:///{tmp_path / 'v1.db'}")
    site = Site(workdir=tmp_path, env=env, url=f"http://127.0.0.1:{port}")
    v1_env = {"PYTHONPATH": str(v1_source)}

    def v1_cli(*argv: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "controlplane.cli", *argv],
            cwd=v1_source,
            env={**env, **v1_env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"version-1 `{' '.join(argv)}`:\n{done.stdout}\n{done.stderr}"
        return done.stdout.strip()

    v1_cli("db", "upgrade")
    v1_cli("admin", "create-site", "demo-rack", "--sites-file", str(v1_source / "controlplane/scenarios/sites.json"))
    v1_cli("admin", "create-tenant", "acme")
    tenant = {"Authorization": f"Bearer {v1_cli('admin', 'create-key', '--tenant', 'acme', '--quiet')}"}
    ops = {"Authorization": f"Bearer {v1_cli('admin', 'create-key', '--operator', '--quiet')}"}
    token = v1_cli("admin", "bootstrap-token", "--site", "demo-rack", "--rack", "rack-001")
    assert token.startswith("sy_boot_"), token
    http = httpx.Client(base_url=site.url, timeout=10)
    try:
        _start(site, "api-v1", "api", "--access-log", cwd=v1_source, extra_env=v1_env)
        _start(site, "scheduler-v1", "scheduler", cwd=v1_source, extra_env=v1_env)
        _wait_api(site)
        argv = _agent_argv(site, tmp_path / "agent-1", 1)
        _start(site, "agent", *argv, cwd=REPO, extra_env={"SWITCHYARD_AGENT_BOOTSTRAP_TOKEN": token})

        def reported() -> bool:
            nodes = http.get("/v1/operator/nodes", headers=ops).json()
            return len(nodes) == 1 and nodes[0]["last_seq"] is not None and nodes[0]["last_seq"] > 1

        wait_for(reported, timeout=60, site=site, what="the agent to register and report")
        # Restarted on its stored credential, it finds out the control plane's version again.
        assert site.stop("agent") == 0
        _start(site, "agent-restarted", *argv, cwd=REPO)
        _run_workloads(site, http, tenant, ["on-v1"])

        for agent in ("agent", "agent-restarted"):
            log = site.log(agent)
            assert f"refused protocol version {PROTOCOL_VERSION}" in log and "speaking 1" in log, log[-3000:]
            assert "unexpected response body" not in log and "Traceback" not in log, log[-5000:]
        # The version-1 API saw protocol-2 fields exactly twice: the first registration and the
        # restarted agent's first report, each refused (422) before it changed anything.
        access = [line for line in site.log("api-v1").splitlines() if '"POST /v1/agent/' in line]
        refused = [line for line in access if re.search(r'HTTP/1\.1" 422', line)]
        assert len(refused) == 2, "\n".join(refused)
        assert "/register" in refused[0] and "/reports" in refused[1], refused
        assert sum('/register HTTP/1.1" 201' in line for line in access) == 1
    finally:
        http.close()
        site.stop_all()
