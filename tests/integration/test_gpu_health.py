"""GPU health, XID events and inventory changes as reports carry them, through to scheduling."""

from __future__ import annotations

import time
from typing import Any

import pytest
from factories import RegisteredNode, make_operator_key, make_site, make_tenant, register_node, workload_body
from fastapi.testclient import TestClient

from agents.protocol import PROTOCOL_VERSION
from controlplane.domain.epoch import PlacementEpoch
from controlplane.runtime import Runtime
from controlplane.services.scheduler.run import run_pass


@pytest.fixture
def site(runtime: Runtime) -> str:
    return make_site(runtime)


class Agent:
    def __init__(self, client: TestClient, node: RegisteredNode) -> None:
        self.client, self.node, self.seq = client, node, 0

    def report(self, health: dict[int, tuple[str, str, list[str]]] | None = None, **extra: Any) -> dict[str, Any]:
        self.seq += 1
        gpus = []
        for g in self.node.inventory.gpus:
            h, action, reasons = (health or {}).get(g.index, ("healthy", "none", []))
            gpus.append(
                {"uuid": g.uuid, "index": g.index, "health": h, "health_action": action, "health_reasons": reasons}
            )
        body = {"protocol_version": PROTOCOL_VERSION, "seq": self.seq, "sent_at": time.time(), "gpus": gpus, **extra}
        r = self.client.post(f"/v1/agent/nodes/{self.node.node_id}/reports", json=body, headers=self.node.headers)
        assert r.status_code == 200, r.text
        return dict(r.json())


def gpus(client: TestClient, ops: dict[str, str], node_id: str) -> dict[int, dict[str, Any]]:
    node = client.get(f"/v1/operator/nodes/{node_id}", headers=ops).json()
    return {g["index"]: g for g in node["gpus"]}


def test_unhealthy_gpu_admits_no_work_and_recovers(client: TestClient, runtime: Runtime, site: str) -> None:
    ops = make_operator_key(runtime)
    acme = make_tenant(runtime, "acme")
    node = register_node(runtime, 1)
    agent = Agent(client, node)
    agent.report(
        {0: ("unhealthy", "reset_gpu", ["XID 95: GPU reset required"])},
        xid_events=[{"uuid": node.inventory.gpus[0].uuid, "xid": 95, "at": time.time()}],
    )
    view = gpus(client, ops, node.node_id)
    assert (
        view[0]["state"] == "faulty"
        and view[0]["health_action"] == "reset_gpu"
        and "XID 95" in view[0]["health_reason"]
    )
    events = client.get(f"/v1/operator/gpus/{view[0]['id']}/events", headers=ops).json()
    assert [e["kind"] for e in events] == ["health", "xid"] and events[1]["xid"] == 95

    wl = client.post("/v1/workloads", json=workload_body(4), headers=acme.headers).json()
    run_pass(runtime, PlacementEpoch(0, 1))
    pending = client.get(f"/v1/workloads/{wl['id']}", headers=acme.headers).json()
    assert pending["state"] == "pending" and "1 unhealthy" in pending["pending_reason"]
    small = client.post("/v1/workloads", json=workload_body(3), headers=acme.headers).json()
    run_pass(runtime, PlacementEpoch(0, 2))
    placed = client.get(f"/v1/workloads/{small['id']}", headers=acme.headers).json()
    assert placed["state"] == "scheduled" and view[0]["uuid"] not in placed["allocation"]["ranks"][0]["gpu_uuids"]

    # The reset happened: the agent's policy says healthy again, and the GPU is usable.
    client.post(f"/v1/workloads/{small['id']}/cancel", headers=acme.headers)
    agent.report(assignments=[{"workload_id": small["id"], "epoch": 2, "rank": 0, "phase": "stopped"}])
    assert gpus(client, ops, node.node_id)[0]["state"] == "free"
    run_pass(runtime, PlacementEpoch(0, 3))
    assert client.get(f"/v1/workloads/{wl['id']}", headers=acme.headers).json()["state"] == "scheduled"


def test_degraded_gpu_still_runs_work(client: TestClient, runtime: Runtime, site: str) -> None:
    acme = make_tenant(runtime, "acme")
    node = register_node(runtime, 1)
    Agent(client, node).report({2: ("degraded", "none", ["XID 92 x5: recurring"])})
    wl = client.post("/v1/workloads", json=workload_body(4), headers=acme.headers).json()
    run_pass(runtime, PlacementEpoch(0, 1))
    assert client.get(f"/v1/workloads/{wl['id']}", headers=acme.headers).json()["state"] == "scheduled"


def test_node_action_takes_the_whole_node_out(client: TestClient, runtime: Runtime, site: str) -> None:
    acme = make_tenant(runtime, "acme")
    node = register_node(runtime, 1)
    agent = Agent(client, node)
    agent.report({1: ("unhealthy", "reboot_node", ["XID 79: GPU fell off the bus"])})
    wl = client.post("/v1/workloads", json=workload_body(1), headers=acme.headers).json()
    run_pass(runtime, PlacementEpoch(0, 1))
    got = client.get(f"/v1/workloads/{wl['id']}", headers=acme.headers).json()
    assert got["state"] == "pending" and "reboot node" in got["pending_reason"]
    agent.report()  # rebooted and healthy
    run_pass(runtime, PlacementEpoch(0, 2))
    assert client.get(f"/v1/workloads/{wl['id']}", headers=acme.headers).json()["state"] == "scheduled"


def test_inventory_changes_mark_gpus_lost_and_found(client: TestClient, runtime: Runtime, site: str) -> None:
    ops = make_operator_key(runtime)
    node = register_node(runtime, 1)
    agent = Agent(client, node)
    inv = node.inventory.model_dump()
    lost = dict(inv, gpus=inv["gpus"][:3])
    agent.report(inventory=lost)
    view = gpus(client, ops, node.node_id)
    assert view[3]["state"] == "lost" and view[3]["present"] is False
    assert [e["kind"] for e in client.get(f"/v1/operator/gpus/{view[3]['id']}/events", headers=ops).json()] == ["lost"]
    offers = client.get("/v1/offerings", headers=make_tenant(runtime, "acme").headers).json()
    assert offers[0]["available"] == 3
    agent.report(inventory=inv)
    assert gpus(client, ops, node.node_id)[3]["state"] == "free"
    # A GPU is swapped for a brand-new one: the new one is added, the old one is lost. (A node
    # never holds more GPUs than its rack's shape: tests/integration/test_report_bounds.py.)
    swapped = dict(inv["gpus"][3], uuid="GPU-new-0000")
    agent.report(inventory=dict(inv, gpus=[*inv["gpus"][:3], swapped]))
    listed = client.get(f"/v1/operator/nodes/{node.node_id}", headers=ops).json()["gpus"]
    present = {g["uuid"] for g in listed if g["present"]}
    assert len(listed) == 5 and present == {*(g["uuid"] for g in inv["gpus"][:3]), "GPU-new-0000"}


def test_nvlink_peer_drain_keeps_gangs_off_the_domain(client: TestClient, runtime: Runtime, site: str) -> None:
    acme = make_tenant(runtime, "acme")
    a = register_node(runtime, 1)
    register_node(runtime, 2)
    register_node(runtime, 3)  # all three trays share the rack's NVLink domain
    agent = Agent(client, a)
    agent.report({0: ("unhealthy", "drain_nvlink_peers", ["recovery action 3: drain NVLink peers"])})
    gang = client.post("/v1/workloads", json=workload_body(8), headers=acme.headers).json()
    single = client.post("/v1/workloads", json=workload_body(1), headers=acme.headers).json()
    run_pass(runtime, PlacementEpoch(0, 1))
    got = client.get(f"/v1/workloads/{gang['id']}", headers=acme.headers).json()
    assert got["state"] == "pending" and "draining their peers" in got["pending_reason"]
    assert client.get(f"/v1/workloads/{single['id']}", headers=acme.headers).json()["state"] == "scheduled"
    agent.report()  # recovered
    run_pass(runtime, PlacementEpoch(0, 2))
    assert client.get(f"/v1/workloads/{gang['id']}", headers=acme.headers).json()["state"] == "scheduled"
