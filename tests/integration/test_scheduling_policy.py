"""Priorities, preemption, quotas and the site's power through the real services and database."""

from __future__ import annotations

import time
from typing import Any

import pytest
from factories import RegisteredNode, TenantKey, demo_spec, make_operator_key, make_tenant, register_node, workload_body
from fastapi.testclient import TestClient
from sqlalchemy import select

from agents.protocol import PROTOCOL_VERSION
from controlplane.domain.epoch import PlacementEpoch
from controlplane.runtime import Runtime
from controlplane.services import admin
from controlplane.services.scheduler.run import run_pass
from controlplane.store.models import MiningEvent, Preemption, Site


def make_site(runtime: Runtime, **overrides: Any) -> str:
    with runtime.uow() as s:
        return admin.create_site(s, name="demo-rack", spec=demo_spec(**overrides)).id


def report(
    client: TestClient, node: RegisteredNode, seq: int, statuses: list[dict[str, Any]], applied: int = 10_000
) -> None:
    body = {
        "protocol_version": PROTOCOL_VERSION,
        "seq": seq,
        "sent_at": time.time(),
        "gpus": [],
        "assignments": statuses,
        "applied_generation": applied,
    }
    r = client.post(f"/v1/agent/nodes/{node.node_id}/reports", json=body, headers=node.headers)
    assert r.status_code == 200, r.text


def get(client: TestClient, tenant: TenantKey, wl_id: str) -> dict[str, Any]:
    return dict(client.get(f"/v1/workloads/{wl_id}", headers=tenant.headers).json())


def submit(client: TestClient, tenant: TenantKey, gpus: int, **kw: Any) -> str:
    r = client.post("/v1/workloads", json=workload_body(gpus, **kw), headers=tenant.headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_on_demand_preempts_spot_with_notice_then_runs(client: TestClient, runtime: Runtime) -> None:
    make_site(runtime)
    nodes = [register_node(runtime, i) for i in (1, 2)]
    by_id = {n.node_id: n for n in nodes}
    cheap, rich = make_tenant(runtime, "cheap"), make_tenant(runtime, "rich")
    spot = [submit(client, cheap, 4, priority="spot") for _ in range(2)]
    run_pass(runtime, PlacementEpoch(0, 1))
    assert all(get(client, cheap, w)["state"] == "scheduled" for w in spot)
    urgent = submit(client, rich, 4, priority="on_demand")
    run_pass(runtime, PlacementEpoch(0, 2))
    waiting = get(client, rich, urgent)
    assert waiting["state"] == "pending" and "preempt" in waiting["pending_reason"]
    states = [get(client, cheap, w) for w in spot]
    victims = [w for w in states if w["state"] == "preempted"]
    assert len(victims) == 1  # the fewest GPUs that make room: one 4-GPU spot workload
    ops = make_operator_key(runtime)
    [record] = client.get("/v1/operator/preemptions", headers=ops).json()
    assert record["victim_id"] == victims[0]["id"] and record["for_workload_id"] == urgent
    assert record["grace_s"] == 30 and record["victim_priority"] == "spot" and record["released_at"] is None
    # The spot workload's agent got it with a 30 s stop grace: its notice.
    victim_node = by_id[victims[0]["allocation"]["ranks"][0]["node_id"]]
    # The GPUs are freed only when the agent says the process is gone.
    status = {"workload_id": victims[0]["id"], "epoch": 1, "rank": 0, "phase": "stopped"}
    report(client, victim_node, 1, [status])
    [record] = client.get("/v1/operator/preemptions", headers=ops).json()
    assert record["released_at"] is not None
    run_pass(runtime, PlacementEpoch(0, 3))
    assert get(client, rich, urgent)["state"] == "scheduled"


def test_spot_assignment_carries_its_grace(client: TestClient, runtime: Runtime) -> None:
    make_site(runtime)
    node = register_node(runtime, 1)
    cheap = make_tenant(runtime, "cheap")
    submit(client, cheap, 4, priority="spot")
    run_pass(runtime, PlacementEpoch(0, 1))
    desired = client.get(f"/v1/agent/nodes/{node.node_id}/desired", headers=node.headers).json()
    assert desired["assignments"][0]["stop_grace_s"] == 30


def test_reserved_preempts_on_demand_only_within_its_reservation(client: TestClient, runtime: Runtime) -> None:
    make_site(runtime)
    register_node(runtime, 1)
    acme, other = make_tenant(runtime, "acme"), make_tenant(runtime, "other")
    ops = make_operator_key(runtime)
    r = client.patch(f"/v1/operator/tenants/{acme.tenant_id}", json={"reserved_gpus": 2}, headers=ops)
    assert r.status_code == 200 and r.json()["reserved_gpus"] == 2
    busy = submit(client, other, 4, priority="on_demand")
    run_pass(runtime, PlacementEpoch(0, 1))
    beyond = submit(client, acme, 4, priority="reserved")  # 4 > its reservation of 2
    run_pass(runtime, PlacementEpoch(0, 2))
    assert get(client, acme, beyond)["state"] == "pending"
    assert get(client, other, busy)["state"] == "scheduled"
    client.post(f"/v1/workloads/{beyond}/cancel", headers=acme.headers)
    within = submit(client, acme, 2, priority="reserved")
    run_pass(runtime, PlacementEpoch(0, 3))
    assert get(client, other, busy)["state"] == "preempted"
    assert "preempt" in get(client, acme, within)["pending_reason"]


def test_reserved_work_is_never_preempted(client: TestClient, runtime: Runtime) -> None:
    make_site(runtime)
    register_node(runtime, 1)
    acme, other = make_tenant(runtime, "acme"), make_tenant(runtime, "other")
    ops = make_operator_key(runtime)
    client.patch(f"/v1/operator/tenants/{acme.tenant_id}", json={"reserved_gpus": 4}, headers=ops)
    reserved = submit(client, acme, 4, priority="reserved")
    run_pass(runtime, PlacementEpoch(0, 1))
    client.patch(f"/v1/operator/tenants/{other.tenant_id}", json={"reserved_gpus": 4}, headers=ops)
    rival = submit(client, other, 4, priority="reserved")
    run_pass(runtime, PlacementEpoch(0, 2))
    assert get(client, acme, reserved)["state"] == "scheduled"
    assert get(client, other, rival)["state"] == "pending"


def test_quota_hold_and_reject(client: TestClient, runtime: Runtime) -> None:
    make_site(runtime)
    register_node(runtime, 1)
    register_node(runtime, 2)
    hold, strict = make_tenant(runtime, "hold"), make_tenant(runtime, "strict")
    ops = make_operator_key(runtime)
    client.patch(f"/v1/operator/tenants/{hold.tenant_id}", json={"max_gpus": 4}, headers=ops)
    client.patch(f"/v1/operator/tenants/{strict.tenant_id}", json={"max_gpus": 4, "over_quota": "reject"}, headers=ops)
    first = submit(client, hold, 4)
    second = submit(client, hold, 2)
    run_pass(runtime, PlacementEpoch(0, 1))
    assert get(client, hold, first)["state"] == "scheduled"
    held = get(client, hold, second)
    assert held["state"] == "pending" and "quota" in held["pending_reason"] and "6/4" in held["pending_reason"]
    quota = client.get("/v1/quota", headers=hold.headers).json()
    assert quota["gpus_in_use"] == 4 and quota["max_gpus"] == 4

    submit(client, strict, 4)
    run_pass(runtime, PlacementEpoch(0, 2))
    r = client.post("/v1/workloads", json=workload_body(1), headers=strict.headers)
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    assert "concurrent-GPU quota (5/4)" in r.json()["detail"]
    assert len(client.get("/v1/workloads", headers=strict.headers).json()["items"]) == 1


@pytest.mark.parametrize("bad", [{"max_gpus": -1}, {"over_quota": "sometimes"}, {"colour": "red"}, {"max_gpus": "4"}])
def test_bad_policy_is_refused(client: TestClient, runtime: Runtime, bad: dict[str, object]) -> None:
    make_site(runtime)
    acme = make_tenant(runtime, "acme")
    ops = make_operator_key(runtime)
    r = client.patch(f"/v1/operator/tenants/{acme.tenant_id}", json=bad, headers=ops)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"


def test_mining_is_shed_for_gpu_work_and_given_back(client: TestClient, runtime: Runtime) -> None:
    # 50 kW grid, 10 ASICs x 3.5 kW: two idle trays plus all the miners fit; loaded GPUs do not.
    site_id = make_site(
        runtime,
        grid_capacity_mw=0.05,
        asics={
            "count": 10,
            "model": "S21",
            "efficiency_j_per_th": 17.5,
            "power_w": 3500,
            "min_power_w": 1200,
            "firmware": "luxos",
        },
    )
    nodes = [register_node(runtime, i) for i in (1, 2)]
    acme = make_tenant(runtime, "acme")
    ops = make_operator_key(runtime)
    power = client.get(f"/v1/operator/sites/{site_id}/power", headers=ops).json()
    assert power["mining_planned_w"] == 35_000 and power["headroom_w"] > 0
    wl = submit(client, acme, 8)
    run_pass(runtime, PlacementEpoch(0, 1))
    got = get(client, acme, wl)
    assert got["state"] == "scheduled"
    power = client.get(f"/v1/operator/sites/{site_id}/power", headers=ops).json()
    assert power["mining_planned_w"] < 35_000 and power["headroom_w"] >= -1e-6
    assert power["gpu_planned_w"] + power["mining_planned_w"] <= power["cap_w"] + 1e-6
    with runtime.read() as s:
        shed = s.scalars(select(MiningEvent)).all()
        assert len(shed) == 1 and shed[0].delta_w < 0
    # The work finishes: its GPUs free, and the power goes back to mining on the next pass.
    for rank in got["allocation"]["ranks"]:
        node = next(n for n in nodes if n.node_id == rank["node_id"])
        report(
            client, node, 1, [{"workload_id": wl, "epoch": 1, "rank": rank["rank"], "phase": "exited", "exit_code": 0}]
        )
    submit(client, acme, 1)
    run_pass(runtime, PlacementEpoch(0, 2))
    with runtime.read() as s:
        site = s.get_one(Site, site_id)
        events = s.scalars(select(MiningEvent).order_by(MiningEvent.id)).all()
        assert events[-1].delta_w > 0 and "returned to mining" in events[-1].reason
        assert site.mining_planned_w > 35_000 - 15_000
        assert s.scalars(select(Preemption)).all() == []  # power never preempts GPU work here


def test_mining_gets_power_back_with_nothing_pending(client: TestClient, runtime: Runtime) -> None:
    site_id = make_site(
        runtime,
        grid_capacity_mw=0.05,
        asics={
            "count": 10,
            "model": "S21",
            "efficiency_j_per_th": 17.5,
            "power_w": 3500,
            "min_power_w": 1200,
            "firmware": "luxos",
        },
    )
    nodes = [register_node(runtime, i) for i in (1, 2)]
    acme = make_tenant(runtime, "acme")
    wl = submit(client, acme, 8)
    run_pass(runtime, PlacementEpoch(0, 1))
    with runtime.read() as s:
        assert s.get_one(Site, site_id).mining_planned_w < 35_000
    client.post(f"/v1/workloads/{wl}/cancel", headers=acme.headers)
    for node in nodes:  # the agents confirm the processes are gone
        report(client, node, 1, [])
    run_pass(runtime, PlacementEpoch(0, 2))  # nothing pending: the pass still rebalances the power
    with runtime.read() as s:
        assert s.get_one(Site, site_id).mining_planned_w == 35_000
