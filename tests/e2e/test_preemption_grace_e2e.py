"""An on_demand victim gets the grace its preemption record promises.

Regression: the core recorded "grace 30 s" for an on_demand victim while the desired state sent
the assignment with no stop grace for on_demand work, so the agent applied its own default.
Here the control plane's grace (8 s) and the agent's default (1 s) differ: the victim traps
SIGTERM, takes 3 s to save a checkpoint and exits on its own, which it can only do if it got
the control plane's grace.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import Site, free_port, process_env, registered_nodes, start_sim_agent, wait_for

GRACE_S = 8
AGENT_DEFAULT_GRACE_S = 1

CHECKPOINTER = r"""
import signal, sys, time
def on_term(signum, frame):
    print("SIGTERM: saving a checkpoint", flush=True)
    time.sleep(3)
    print("checkpoint saved", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print("training", flush=True)
while True:
    time.sleep(0.2)
"""


@pytest.fixture
def one_tray(tmp_path: Path, redis_prefix: str) -> Iterator[tuple[Site, dict[str, str]]]:
    from factories import demo_spec
    from testenv import PEPPER, REDIS_URL, pg_database

    from controlplane.config import Settings
    from controlplane.domain.enums import KeyScope
    from controlplane.services import admin
    from controlplane.store.db import make_engine, make_session_factory, transaction
    from controlplane.store.migrate import upgrade

    db_name = f"switchyard_e2e_{uuid.uuid4().hex[:8]}"
    db_url = pg_database(db_name, drop=False)
    upgrade(db_url)
    port = free_port()
    env = process_env(tmp_path, db_url=db_url, redis_url=REDIS_URL, redis_prefix=redis_prefix, pepper=PEPPER, port=port)
    env["SWITCHYARD_STOP_GRACE_S"] = str(GRACE_S)
    engine = make_engine(db_url)
    pepper = Settings(database_url=db_url, pepper=PEPPER).pepper_bytes()
    keys: dict[str, str] = {}
    with transaction(make_session_factory(engine)) as session:
        admin.create_site(session, name="demo-rack", spec=demo_spec())
        for name, reserved in (("renter", 0), ("contract", 4)):
            tenant = admin.create_tenant(session, name=name)
            admin.update_tenant_policy(session, tenant_id=tenant.id, changes={"reserved_gpus": reserved})
            keys[name] = admin.issue_api_key(session, pepper=pepper, scope=KeyScope.TENANT, tenant_id=tenant.id).secret
        keys["ops"] = admin.issue_api_key(session, pepper=pepper, scope=KeyScope.OPERATOR).secret
        _, token = admin.issue_bootstrap_token(
            session, pepper=pepper, site_name="demo-rack", rack="rack-001", ttl_s=600
        )
    engine.dispose()
    site = Site(workdir=tmp_path, env=env, url=f"http://127.0.0.1:{port}")
    try:
        site.start("api", "api")
        site.start("scheduler", "scheduler")
        wait_for(lambda: httpx.get(f"{site.url}/healthz", timeout=1).status_code == 200, timeout=30, site=site)
        start_sim_agent(site, 1, token, "--stop-grace", str(AGENT_DEFAULT_GRACE_S))
        yield site, keys
    finally:
        site.stop_all()
        pg_database(db_name, drop=True)


def test_an_on_demand_victim_gets_the_control_planes_grace(one_tray: tuple[Site, dict[str, str]]) -> None:
    site, keys = one_tray
    http = httpx.Client(base_url=site.url, timeout=10)
    auth = {name: {"Authorization": f"Bearer {key}"} for name, key in keys.items()}
    registered_nodes(http, auth["ops"], 1, site)

    def submit(tenant: str, priority: str, command: list[str]) -> str:
        body = {"gpus": 4, "priority": priority, "command": command}
        r = http.post("/v1/workloads", json=body, headers=auth[tenant])
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def workload(tenant: str, wl: str) -> dict[str, Any]:
        found: dict[str, Any] = http.get(f"/v1/workloads/{wl}", headers=auth[tenant]).json()
        return found

    victim = submit("renter", "on_demand", [sys.executable, "-c", CHECKPOINTER])
    wait_for(lambda: workload("renter", victim)["state"] == "running", timeout=30, site=site, what="the victim to run")
    wait_for(
        lambda: "training" in http.get(f"/v1/workloads/{victim}/logs", headers=auth["renter"]).text,
        timeout=20,
        site=site,
        what="the victim's first output",
    )
    contract = submit("contract", "reserved", [sys.executable, "-c", "print('reserved work')"])

    wait_for(lambda: workload("renter", victim)["state"] == "preempted", timeout=20, site=site, what="the preemption")
    records = http.get("/v1/operator/preemptions", headers=auth["ops"]).json()
    assert [(p["victim_id"], p["victim_priority"], p["grace_s"]) for p in records] == [(victim, "on_demand", GRACE_S)]

    done = wait_for(
        lambda: workload("contract", contract)["state"] in ("succeeded", "failed") and workload("contract", contract),
        timeout=40,
        site=site,
        what="the reserved workload to run once the victim let go",
    )
    assert done["state"] == "succeeded", done
    log = http.get(f"/v1/workloads/{victim}/logs", headers=auth["renter"]).text
    assert "SIGTERM: saving a checkpoint" in log and "checkpoint saved" in log, log
    rank = workload("renter", victim)["allocation"]["ranks"][0]
    assert rank["phase"] == "stopped" and rank["exit_code"] == 0, rank
