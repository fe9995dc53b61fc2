"""Protocol 3 over HTTP, on both databases: the agent's metrics URL reaches the operator's node
view (issue 9 finding 10), and a batch of spooled reports is folded in order through the same
ingest path as single reports, with the same dedup and durability (finding 13)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from factories import (
    RegisteredNode,
    bootstrap_token,
    inventory,
    make_operator_key,
    make_site,
    register_node,
)
from fastapi.testclient import TestClient

from agents.protocol import PROTOCOL_VERSION
from controlplane.runtime import Runtime

PROBLEM = "application/problem+json"


@pytest.fixture
def site(runtime: Runtime) -> str:
    return make_site(runtime)


def _report(node: RegisteredNode, seq: int, *, version: int = PROTOCOL_VERSION, **extra: Any) -> dict[str, Any]:
    return {
        "protocol_version": version,
        "seq": seq,
        "sent_at": time.time(),
        "gpus": [
            {"uuid": g.uuid, "index": g.index, "power_w": 180.0, "energy_mj": 1000 * seq} for g in node.inventory.gpus
        ],
        "assignments": [],
        "applied_generation": 0,
        **extra,
    }


def _node(client: TestClient, ops: dict[str, str], node_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/operator/nodes/{node_id}", headers=ops)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_the_metrics_url_an_agent_gives_at_registration_and_in_reports_is_in_the_node_view(
    client: TestClient, runtime: Runtime, site: str
) -> None:
    ops = make_operator_key(runtime)
    url = "http://10.0.0.7:39411/metrics"
    body = {
        "protocol_version": PROTOCOL_VERSION,
        "bootstrap_token": bootstrap_token(runtime),
        "inventory": inventory(1).model_dump(),
        "metrics_url": url,
    }
    r = client.post("/v1/agent/register", json=body)
    assert r.status_code == 201, r.text
    node_id, credential = r.json()["node_id"], r.json()["credential"]
    assert _node(client, ops, node_id)["metrics_url"] == url
    listed = {n["id"]: n for n in client.get("/v1/operator/nodes", headers=ops).json()}
    assert listed[node_id]["metrics_url"] == url

    node = RegisteredNode(node_id, credential, inventory(1))
    moved = "http://10.0.0.7:40001/metrics"  # the agent restarted on another port
    r = client.post(
        f"/v1/agent/nodes/{node_id}/reports", json=_report(node, 1, metrics_url=moved), headers=node.headers
    )
    assert r.status_code == 200 and r.json()["accepted"], r.text
    assert _node(client, ops, node_id)["metrics_url"] == moved
    # A report that does not say it (an older agent, a spooled report) leaves it as it was.
    r = client.post(f"/v1/agent/nodes/{node_id}/reports", json=_report(node, 2, version=2), headers=node.headers)
    assert r.status_code == 200 and r.json()["accepted"], r.text
    view = _node(client, ops, node_id)
    assert view["metrics_url"] == moved and view["protocol_version"] == 2


def test_a_metrics_url_that_is_not_one_is_refused(client: TestClient, runtime: Runtime, site: str) -> None:
    node = register_node(runtime, 1)
    for bad in ("ftp://x/metrics", "http://a b/metrics", "http://\x00/metrics", "http://" + "x" * 300):
        r = client.post(
            f"/v1/agent/nodes/{node.node_id}/reports", json=_report(node, 1, metrics_url=bad), headers=node.headers
        )
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, (bad, r.text)


def test_older_agents_register_and_report_without_a_metrics_url(
    client: TestClient, runtime: Runtime, site: str
) -> None:
    ops = make_operator_key(runtime)
    body = {"protocol_version": 2, "bootstrap_token": bootstrap_token(runtime), "inventory": inventory(1).model_dump()}
    r = client.post("/v1/agent/register", json=body)
    assert r.status_code == 201, r.text
    answer = r.json()
    assert answer["protocol_version"] == PROTOCOL_VERSION and "metrics_url" not in answer
    view = _node(client, ops, answer["node_id"])
    assert view["metrics_url"] is None and view["protocol_version"] == 2


def _batch(node: RegisteredNode, seqs: list[int], **extra: Any) -> dict[str, Any]:
    return {"protocol_version": PROTOCOL_VERSION, "reports": [_report(node, s, **extra) for s in seqs]}


def test_a_batch_folds_its_reports_in_order_with_the_single_reports_dedup(
    client: TestClient, runtime: Runtime, site: str
) -> None:
    ops = make_operator_key(runtime)
    node = register_node(runtime, 1)
    path = f"/v1/agent/nodes/{node.node_id}/reports"
    assert client.post(path, json=_report(node, 2), headers=node.headers).json()["accepted"]

    # seq 2 was sent alone already; seq 4 lists more GPUs than the rack's nodes have, and seq
    # 100000 jumps too far ahead: each is refused as it would be alone (422, 409), and the next
    # report is taken.
    batch = _batch(node, [1, 2, 3, 4, 5, 100_000])
    batch["reports"][3]["inventory"] = inventory(1, gpus=12).model_dump()
    r = client.post(f"{path}/batch", json=batch, headers=node.headers)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["seq"] for x in results] == [1, 2, 3, 4, 5, 100_000]
    assert [(x["accepted"], x["duplicate"], x["refused_status"]) for x in results] == [
        (False, True, None),  # below the last seq seen (2): a duplicate, as it would be alone
        (False, True, None),
        (True, False, None),
        (False, False, 422),
        (True, False, None),
        (False, False, 409),
    ]
    assert "too far ahead" in results[5]["refused_detail"]
    view = _node(client, ops, node.node_id)
    assert view["last_seq"] == 5
    assert (view["reports_accepted"], view["reports_duplicate"]) == (3, 2)

    # The same batch again (the agent's retry after a lost answer): all duplicates, nothing changes.
    again = client.post(f"{path}/batch", json=_batch(node, [3, 5]), headers=node.headers).json()["results"]
    assert [(x["accepted"], x["duplicate"]) for x in again] == [(False, True)] * 2
    assert _node(client, ops, node.node_id)["reports_accepted"] == 3


def test_a_batch_out_of_order_or_of_an_older_protocol_is_refused_whole(
    client: TestClient, runtime: Runtime, site: str
) -> None:
    ops = make_operator_key(runtime)
    node = register_node(runtime, 1)
    path = f"/v1/agent/nodes/{node.node_id}/reports/batch"
    r = client.post(path, json=_batch(node, [2, 1]), headers=node.headers)
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, r.text
    r = client.post(path, json={**_batch(node, [1, 2]), "protocol_version": 2}, headers=node.headers)
    assert r.status_code == 400 and r.headers["content-type"] == PROBLEM, r.text
    r = client.post(path, json={"protocol_version": PROTOCOL_VERSION, "reports": []}, headers=node.headers)
    assert r.status_code == 422, r.text
    other = register_node(runtime, 2)
    r = client.post(path, json=_batch(node, [1]), headers=other.headers)
    assert r.status_code == 403 and r.headers["content-type"] == PROBLEM, r.text
    assert _node(client, ops, node.node_id)["last_seq"] is None
