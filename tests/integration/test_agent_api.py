"""The agent protocol over HTTP: register, report, long-poll, logs, and the whole lifecycle."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from factories import (
    RegisteredNode,
    bootstrap_token,
    inventory,
    make_operator_key,
    make_site,
    make_tenant,
    register_node,
    workload_body,
)
from fastapi.testclient import TestClient

from agents.protocol import PROTOCOL_VERSION
from controlplane.domain.epoch import PlacementEpoch
from controlplane.runtime import Runtime
from controlplane.services.scheduler.run import run_pass

PROBLEM = "application/problem+json"


@pytest.fixture
def site(runtime: Runtime) -> str:
    return make_site(runtime)


def _register_body(runtime: Runtime, index: int, token: str | None = None) -> dict[str, Any]:
    return {
        "protocol_version": PROTOCOL_VERSION,
        "bootstrap_token": token or bootstrap_token(runtime),
        "inventory": inventory(index).model_dump(),
    }


def _report(
    node: RegisteredNode, seq: int, assignments: Iterable[dict[str, Any]] = (), applied: int = 0
) -> dict[str, Any]:
    return {
        "protocol_version": PROTOCOL_VERSION,
        "seq": seq,
        "sent_at": time.time(),
        "gpus": [
            {
                "uuid": g.uuid,
                "index": g.index,
                "power_w": 180.0,
                "energy_mj": 1000 * seq,
                "processes": [{"pid": 4242, "used_memory_mib": 1024.0}],
                "xid_counts": {"13": 1},
                "remapped_rows_pending": False,
                "health": "degraded",
                "health_reasons": ["XID 13: graphics engine exception"],
            }
            for g in node.inventory.gpus
        ],
        "assignments": list(assignments),
        "applied_generation": applied,
    }


def test_register_once_per_token(client: TestClient, runtime: Runtime, site: str) -> None:
    token = bootstrap_token(runtime)
    r = client.post("/v1/agent/register", json=_register_body(runtime, 1, token))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["credential"].startswith("sy_agent_") and body["node_id"].startswith("node_")
    again = client.post("/v1/agent/register", json=_register_body(runtime, 2, token))
    assert again.status_code == 401 and again.headers["content-type"] == PROBLEM
    assert "already used" in again.json()["detail"]
    ops = make_operator_key(runtime)
    nodes = client.get("/v1/operator/nodes", headers=ops).json()
    assert len(nodes) == 1 and nodes[0]["nvlink_domain"] and len(nodes[0]["gpus"]) == 4
    assert nodes[0]["lease_alive"] is True


@pytest.mark.parametrize(
    "mutate, status",
    [
        (lambda b: b.update(bootstrap_token="sy_boot_" + "A" * 49), 401),
        (lambda b: b.update(protocol_version=99), 400),
        # An unknown field is ignored since protocol 2 (tests/integration/test_protocol_compat.py); a bad value is not.
        (lambda b: b["inventory"].update(hostname=""), 422),
        (lambda b: b["inventory"]["gpus"].append(dict(b["inventory"]["gpus"][0])), 422),
    ],
)
def test_register_bad_input(
    client: TestClient, runtime: Runtime, site: str, mutate: Callable[[dict[str, Any]], object], status: int
) -> None:
    body = _register_body(runtime, 1)
    mutate(body)
    r = client.post("/v1/agent/register", json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    ops = make_operator_key(runtime)
    assert client.get("/v1/operator/nodes", headers=ops).json() == []


def test_agent_reports_only_for_its_own_node(client: TestClient, runtime: Runtime, site: str) -> None:
    a = register_node(runtime, 1)
    b = register_node(runtime, 2)
    r = client.post(f"/v1/agent/nodes/{b.node_id}/reports", json=_report(b, 1), headers=a.headers)
    assert r.status_code == 403 and r.headers["content-type"] == PROBLEM
    r = client.get(f"/v1/agent/nodes/{b.node_id}/desired", headers=a.headers)
    assert r.status_code == 403
    # A tenant key is not an agent key.
    acme = make_tenant(runtime, "acme")
    assert (
        client.post(f"/v1/agent/nodes/{a.node_id}/reports", json=_report(a, 1), headers=acme.headers).status_code == 403
    )


def test_reports_are_deduplicated_by_sequence(client: TestClient, runtime: Runtime, site: str) -> None:
    node = register_node(runtime, 1)
    first = client.post(f"/v1/agent/nodes/{node.node_id}/reports", json=_report(node, 5), headers=node.headers)
    assert first.json()["accepted"] is True
    dup = client.post(f"/v1/agent/nodes/{node.node_id}/reports", json=_report(node, 5), headers=node.headers)
    assert dup.json() == {"accepted": False, "duplicate": True, "generation": first.json()["generation"]}
    older = client.post(f"/v1/agent/nodes/{node.node_id}/reports", json=_report(node, 4), headers=node.headers)
    assert older.json()["duplicate"] is True
    samples = runtime.live.gpu_samples([node.node_id])[node.node_id]
    assert samples[node.inventory.gpus[0].uuid]["energy_mj"] == 5000  # the older report did not overwrite
    assert runtime.live.report_counts(node.node_id) == (1, 2, 5)


def test_long_poll_wakes_on_placement(client: TestClient, runtime: Runtime, site: str) -> None:
    node = register_node(runtime, 1)
    acme = make_tenant(runtime, "acme")
    gen = client.get(f"/v1/agent/nodes/{node.node_id}/desired", headers=node.headers).json()["generation"]
    result: dict[str, Any] = {}

    def poll() -> None:
        started = time.monotonic()
        r = client.get(
            f"/v1/agent/nodes/{node.node_id}/desired", params={"after": gen, "wait": 5}, headers=node.headers
        )
        result.update(r.json(), elapsed=time.monotonic() - started)

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.3)
    client.post("/v1/workloads", json=workload_body(4), headers=acme.headers)
    with runtime.redis.pubsub() as ps:  # the scheduler's pass publishes the wake-up after commit
        ps.subscribe(runtime.keys.node_wake_channel)
        run_pass(runtime, PlacementEpoch(0, 1))
    t.join(10)
    assert result["generation"] > gen and len(result["assignments"]) == 1
    assert result["elapsed"] < 4, result  # woken, not timed out
    a = result["assignments"][0]
    assert len(a["gpu_uuids"]) == 4 and a["world_size"] == 1 and a["epoch"] == 1


def test_lifecycle_through_reports(client: TestClient, runtime: Runtime, site: str) -> None:
    """Submit 16 GPUs (NVLink), place, start, run, succeed, and see the GPUs free again."""
    nodes = [register_node(runtime, i) for i in range(1, 6)]
    acme = make_tenant(runtime, "acme")
    ops = make_operator_key(runtime)
    wl = client.post("/v1/workloads", json=workload_body(16), headers=acme.headers).json()
    run_pass(runtime, PlacementEpoch(0, 3))
    got = client.get(f"/v1/workloads/{wl['id']}", headers=acme.headers).json()
    assert got["state"] == "scheduled" and got["allocation"]["gpu_count"] == 16
    ranks = got["allocation"]["ranks"]
    assert len(ranks) == 4 and all(len(r["gpu_uuids"]) == 4 for r in ranks)
    by_id = {n.node_id: n for n in nodes}
    seq = 10

    def report_all(phase: str, exit_code: int | None = None) -> None:
        nonlocal seq
        seq += 1
        for r in ranks:
            node = by_id[r["node_id"]]
            desired = client.get(f"/v1/agent/nodes/{node.node_id}/desired", headers=node.headers).json()
            status = {
                "workload_id": wl["id"],
                "epoch": 3,
                "rank": r["rank"],
                "phase": phase,
                "exit_code": exit_code,
            }
            resp = client.post(
                f"/v1/agent/nodes/{node.node_id}/reports",
                json=_report(node, seq, [status], desired["generation"]),
                headers=node.headers,
            )
            assert resp.status_code == 200, resp.text

    report_all("running")
    assert client.get(f"/v1/workloads/{wl['id']}", headers=acme.headers).json()["state"] == "running"
    free = client.get("/v1/operator/gpus", params={"state": "free"}, headers=ops).json()
    assert len(free) == 4
    # Logs: the agent ships bytes, the tenant reads them back in order.
    rank0 = by_id[ranks[0]["node_id"]]
    chunk = {
        "workload_id": wl["id"],
        "rank": 0,
        "offset": 0,
        "data_b64": base64.b64encode(b"step 1\n").decode(),
    }
    r = client.post(
        f"/v1/agent/nodes/{rank0.node_id}/logs",
        json={"protocol_version": PROTOCOL_VERSION, "chunks": [chunk]},
        headers=rank0.headers,
    )
    assert r.json()["acked"] == {f"{wl['id']}/0": 7}
    other = by_id[ranks[1]["node_id"]]
    r = client.post(
        f"/v1/agent/nodes/{other.node_id}/logs",
        json={"protocol_version": PROTOCOL_VERSION, "chunks": [chunk]},
        headers=other.headers,
    )
    assert r.status_code == 403  # rank 0 never ran on that node
    logs = client.get(f"/v1/workloads/{wl['id']}/logs", headers=acme.headers)
    assert logs.text == "step 1\n" and logs.headers["X-Next-Offset"] == "7"

    report_all("exited", 0)
    done = client.get(f"/v1/workloads/{wl['id']}", headers=acme.headers).json()
    assert done["state"] == "succeeded" and done["allocation"]["released"] is True
    # Ranks report one by one: the first running rank makes it starting, the last one running.
    assert [h["to_state"] for h in done["history"]] == [
        "pending",
        "scheduled",
        "starting",
        "running",
        "succeeded",
    ]
    assert len(client.get("/v1/operator/gpus", params={"state": "free"}, headers=ops).json()) == 20


def test_cancel_frees_gpus_only_after_the_agent_confirms(client: TestClient, runtime: Runtime, site: str) -> None:
    node = register_node(runtime, 1)
    acme = make_tenant(runtime, "acme")
    ops = make_operator_key(runtime)
    wl = client.post("/v1/workloads", json=workload_body(4), headers=acme.headers).json()
    run_pass(runtime, PlacementEpoch(0, 1))
    desired = client.get(f"/v1/agent/nodes/{node.node_id}/desired", headers=node.headers).json()
    running = {"workload_id": wl["id"], "epoch": 1, "rank": 0, "phase": "running"}
    client.post(
        f"/v1/agent/nodes/{node.node_id}/reports",
        json=_report(node, 1, [running], desired["generation"]),
        headers=node.headers,
    )
    client.post(f"/v1/workloads/{wl['id']}/cancel", headers=acme.headers)
    assert {g["state"] for g in client.get("/v1/operator/gpus", headers=ops).json()} == {"releasing"}
    # The agent has not seen the new desired state yet: its process may still run.
    client.post(
        f"/v1/agent/nodes/{node.node_id}/reports",
        json=_report(node, 2, [running], desired["generation"]),
        headers=node.headers,
    )
    assert {g["state"] for g in client.get("/v1/operator/gpus", headers=ops).json()} == {"releasing"}
    newer = client.get(f"/v1/agent/nodes/{node.node_id}/desired", headers=node.headers).json()
    assert newer["assignments"] == []
    stopped = {**running, "phase": "stopped"}
    client.post(
        f"/v1/agent/nodes/{node.node_id}/reports",
        json=_report(node, 3, [stopped], newer["generation"]),
        headers=node.headers,
    )
    assert {g["state"] for g in client.get("/v1/operator/gpus", headers=ops).json()} == {"free"}
    assert client.get(f"/v1/workloads/{wl['id']}", headers=acme.headers).json()["state"] == "cancelled"


def test_cordon_keeps_work_off_a_node(client: TestClient, runtime: Runtime, site: str) -> None:
    a = register_node(runtime, 1)
    register_node(runtime, 2)
    acme = make_tenant(runtime, "acme")
    ops = make_operator_key(runtime)
    assert client.post(f"/v1/operator/nodes/{a.node_id}/cordon", json={"reason": "fan"}, headers=ops).json()["cordoned"]
    for _ in range(2):
        client.post("/v1/workloads", json=workload_body(4), headers=acme.headers)
    run_pass(runtime, PlacementEpoch(0, 1))
    states = {g["node_id"]: g["state"] for g in client.get("/v1/operator/gpus", headers=ops).json()}
    assert states[a.node_id] == "cordoned"
    pending = client.get("/v1/workloads", params={"state": "pending"}, headers=acme.headers).json()["items"]
    assert len(pending) == 1 and "cordoned" in pending[0]["pending_reason"]
    client.post(f"/v1/operator/nodes/{a.node_id}/uncordon", headers=ops)
    run_pass(runtime, PlacementEpoch(0, 1))
    assert client.get("/v1/workloads", params={"state": "pending"}, headers=acme.headers).json()["items"] == []


def test_control_plane_metrics(client: TestClient, runtime: Runtime, site: str) -> None:
    register_node(runtime, 1)
    acme = make_tenant(runtime, "acme")
    client.post("/v1/workloads", json=workload_body(4), headers=acme.headers)
    text = client.get("/metrics").text
    assert 'switchyard_gpus{model="NVIDIA GB300",state="free"} 4.0' in text
    assert 'switchyard_nodes{status="ready"} 1.0' in text
    assert 'switchyard_workloads{priority="on_demand",state="pending"} 1.0' in text


def test_unchanged_reports_open_no_database_transaction_but_the_meters_once_a_minute(
    client: TestClient, runtime: Runtime, site: str
) -> None:
    """SQL sees state changes, and the energy meter's checkpoint: the first report of each node
    in each metering minute (by its sample time) stores its readings (issue 11)."""
    from sqlalchemy import event, func, select

    from controlplane.store.models import EnergyReading

    node = register_node(runtime, 1)
    minute = time.time() // 60 * 60

    def report(seq: int, at: float) -> dict[str, Any]:
        body = _report(node, seq)
        body["sent_at"] = at
        return body

    begins: list[int] = []
    event.listen(runtime.engine, "begin", lambda conn: begins.append(1))
    first = client.post(f"/v1/agent/nodes/{node.node_id}/reports", json=report(1, minute), headers=node.headers)
    assert first.json()["accepted"] and len(begins) >= 1
    begins.clear()
    for seq in range(2, 12):  # telemetry changes every time; the assignment state does not
        r = client.post(f"/v1/agent/nodes/{node.node_id}/reports", json=report(seq, minute + seq), headers=node.headers)
        assert r.json() == {"accepted": True, "duplicate": False, "generation": first.json()["generation"]}
    assert (
        begins == []
        and runtime.live.gpu_samples([node.node_id])[node.node_id][node.inventory.gpus[0].uuid]["energy_mj"] == 11000
    )
    # The next minute's first report checkpoints (one transaction), the one after does not.
    for seq, expected in ((12, 1), (13, 1)):
        client.post(
            f"/v1/agent/nodes/{node.node_id}/reports", json=report(seq, minute + 60 + seq), headers=node.headers
        )
        assert len(begins) == expected
    with runtime.sessions() as s:
        stored = s.scalars(select(EnergyReading.energy_mj).order_by(EnergyReading.at_us)).all()
        assert s.scalar(select(func.count()).select_from(EnergyReading)) == 2 * len(node.inventory.gpus)
    assert sorted({mj for mj in stored if mj is not None}) == [1000, 12000]
    # A placement bumps the generation: the next report carries it without touching SQL either.
    acme = make_tenant(runtime, "acme")
    client.post("/v1/workloads", json=workload_body(4), headers=acme.headers)
    run_pass(runtime, PlacementEpoch(0, 1))
    begins.clear()
    r = client.post(f"/v1/agent/nodes/{node.node_id}/reports", json=report(20, minute + 90), headers=node.headers)
    assert r.json()["generation"] > first.json()["generation"] and begins == []
    # A report whose assignments changed does reach SQL.
    status = {"workload_id": "wl_x", "epoch": 1, "rank": 0, "phase": "running"}
    body = _report(node, 21, [status])
    body["sent_at"] = minute + 91
    client.post(f"/v1/agent/nodes/{node.node_id}/reports", json=body, headers=node.headers)
    assert begins != []
    with runtime.sessions() as s:  # its readings come with the fold
        assert 21000 in s.scalars(select(EnergyReading.energy_mj)).all()


def test_energy_accumulates_from_counters_across_resets_and_duplicates(
    client: TestClient, runtime: Runtime, site: str
) -> None:
    node = register_node(runtime, 1)
    uuid = node.inventory.gpus[0].uuid

    def send(seq: int, energy: int) -> None:
        body = _report(node, seq)
        body["gpus"] = [{"uuid": uuid, "index": 0, "energy_mj": energy}]
        assert (
            client.post(f"/v1/agent/nodes/{node.node_id}/reports", json=body, headers=node.headers).status_code == 200
        )

    send(1, 1_000_000)  # baseline: energy before we knew the GPU is not ours to count
    send(2, 1_400_000)
    send(2, 1_400_000)  # a retry: counted once
    send(3, 1_900_000)
    send(4, 300_000)  # the driver reloaded: the counter restarted from 0
    send(5, 350_000)
    count = runtime.live.energy([node.node_id])[node.node_id][uuid]
    assert count.total_mj == 400_000 + 500_000 + 300_000 + 50_000
    assert count.resets == 1 and count.last_counter_mj == 350_000
