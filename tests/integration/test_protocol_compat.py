"""Agents and control plane of different protocol versions work together (a rolling upgrade).

The version-1 side is the real one: its wire module is read from git (``protocol_v1``), and its
models refuse unknown fields as a version-1 agent does, so every answer below that parses with
them is one a version-1 agent accepts.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from factories import (
    bootstrap_token,
    inventory,
    make_operator_key,
    make_site,
    make_tenant,
    workload_body,
)
from fastapi.testclient import TestClient
from protocol_v1 import v1_model, v1_protocol
from pydantic import BaseModel

from agents import protocol
from agents.protocol import MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, field_since
from controlplane.domain.epoch import PlacementEpoch
from controlplane.runtime import Runtime
from controlplane.services.scheduler.run import run_pass

PROBLEM = "application/problem+json"
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def site(runtime: Runtime) -> str:
    return make_site(runtime)


def _v1(name: str, **fields: Any) -> BaseModel:
    return v1_model(name)(**fields)


def _v1_parse(name: str, content: bytes) -> BaseModel:
    """Parse as a version-1 agent does: an unknown field fails here."""
    return v1_model(name).model_validate_json(content)


def _node_versions(client: TestClient, ops: dict[str, str]) -> dict[str, tuple[int | None, str | None]]:
    nodes = client.get("/v1/operator/nodes", headers=ops).json()
    return {n["id"]: (n["protocol_version"], n["agent_version"]) for n in nodes}


def _v1_inventory(index: int) -> BaseModel:
    return v1_model("NodeInventory").model_validate(inventory(index).model_dump())


def _v1_report(seq: int, inv: BaseModel, statuses: list[BaseModel], applied: int) -> bytes:
    gpus = [
        _v1("GpuTelemetry", uuid=g["uuid"], index=g["index"], power_w=200.0, energy_mj=1000 * seq)
        for g in inv.model_dump()["gpus"]
    ]
    report = _v1(
        "ReportRequest",
        protocol_version=1,
        seq=seq,
        sent_at=time.time(),
        gpus=gpus,
        assignments=statuses,
        applied_generation=applied,
    )
    return report.model_dump_json().encode()


def test_a_version_1_agent_runs_a_workload_on_this_control_plane(
    client: TestClient, runtime: Runtime, site: str
) -> None:
    acme = make_tenant(runtime, "acme")
    ops = make_operator_key(runtime)
    inv = _v1_inventory(1)
    register = _v1("RegisterRequest", protocol_version=1, bootstrap_token=bootstrap_token(runtime), inventory=inv)
    r = client.post("/v1/agent/register", content=register.model_dump_json(), headers=JSON)
    assert r.status_code == 201, r.text
    registered = _v1_parse("RegisterResponse", r.content).model_dump()
    node_id, headers = registered["node_id"], {"Authorization": f"Bearer {registered['credential']}"}
    assert _node_versions(client, ops) == {node_id: (1, None)}

    def report(seq: int, statuses: list[BaseModel], applied: int) -> dict[str, Any]:
        r = client.post(
            f"/v1/agent/nodes/{node_id}/reports",
            content=_v1_report(seq, inv, statuses, applied),
            headers={**headers, **JSON},
        )
        assert r.status_code == 200, r.text
        return _v1_parse("ReportResponse", r.content).model_dump()

    def desired(**params: Any) -> dict[str, Any]:
        r = client.get(f"/v1/agent/nodes/{node_id}/desired", params=params, headers=headers)
        assert r.status_code == 200, r.text
        return _v1_parse("DesiredState", r.content).model_dump()

    first = report(1, [], 0)
    wl = client.post("/v1/workloads", json=workload_body(4), headers=acme.headers).json()
    run_pass(runtime, PlacementEpoch(0, 1))
    state = desired(after=first["generation"])  # a version-1 agent sends no ?protocol=
    assert state == desired(after=first["generation"], protocol=1)
    (assignment,) = state["assignments"]
    assert assignment["workload_id"] == wl["id"] and len(assignment["gpu_uuids"]) == 4

    def status(phase: str, exit_code: int | None = None) -> BaseModel:
        return _v1(
            "AssignmentStatus",
            workload_id=wl["id"],
            epoch=assignment["epoch"],
            rank=0,
            phase=phase,
            exit_code=exit_code,
        )

    report(2, [status("running")], state["generation"])
    chunk = _v1("LogChunk", workload_id=wl["id"], rank=0, offset=0, data_b64=base64.b64encode(b"hello v1\n").decode())
    upload = _v1("LogUpload", protocol_version=1, chunks=[chunk])
    r = client.post(f"/v1/agent/nodes/{node_id}/logs", content=upload.model_dump_json(), headers={**headers, **JSON})
    assert r.status_code == 200, r.text
    assert _v1_parse("LogUploadResponse", r.content).model_dump() == {"acked": {f"{wl['id']}/0": 9}}
    report(3, [status("exited", 0)], state["generation"])
    done = client.get(f"/v1/workloads/{wl['id']}", headers=acme.headers).json()
    assert done["state"] == "succeeded", done
    assert client.get(f"/v1/workloads/{wl['id']}/logs", headers=acme.headers).text == "hello v1\n"
    assert desired(after=0)["assignments"] == []
    assert _node_versions(client, ops) == {node_id: (1, None)}


def test_an_agent_s_unknown_fields_are_ignored_and_a_tenant_s_refused(
    client: TestClient, runtime: Runtime, site: str
) -> None:
    """Agents roll out node by node, so the wire tolerates what it does not know; a tenant's
    request body stays strict (a typo there is an error, not silence)."""
    ops = make_operator_key(runtime)
    inv = inventory(1).model_dump(mode="json")
    inv["gpus"][0]["from_the_future"] = {"x": 1}
    inv["future_field"] = 1
    body = {
        "protocol_version": PROTOCOL_VERSION,
        "bootstrap_token": bootstrap_token(runtime),
        "inventory": inv,
        "agent_version": "9.9.9",
        "future_field": [1, 2],
    }
    r = client.post("/v1/agent/register", json=body)
    assert r.status_code == 201, r.text
    answer = protocol.RegisterResponse.model_validate_json(r.content)
    assert (answer.min_protocol_version, answer.protocol_version) == (MIN_PROTOCOL_VERSION, PROTOCOL_VERSION)
    headers = {"Authorization": f"Bearer {answer.credential}"}
    report = {
        "protocol_version": PROTOCOL_VERSION,
        "agent_version": "9.9.9",
        "seq": 1,
        "sent_at": time.time(),
        "gpus": [{"uuid": g["uuid"], "index": g["index"], "new_counter": 7} for g in inv["gpus"]],
        "future_field": True,
    }
    r = client.post(f"/v1/agent/nodes/{answer.node_id}/reports", json=report, headers=headers)
    assert r.status_code == 200, r.text
    assert protocol.ReportResponse.model_validate_json(r.content).accepted
    upload = {"protocol_version": PROTOCOL_VERSION, "chunks": [], "compression": "zstd"}
    r = client.post(f"/v1/agent/nodes/{answer.node_id}/logs", json=upload, headers=headers)
    assert r.status_code == 200, r.text
    r = client.get(f"/v1/agent/nodes/{answer.node_id}/desired", params={"protocol": PROTOCOL_VERSION}, headers=headers)
    assert r.status_code == 200 and protocol.DesiredState.model_validate_json(r.content).node_id == answer.node_id
    assert _node_versions(client, ops) == {answer.node_id: (PROTOCOL_VERSION, "9.9.9")}

    acme = make_tenant(runtime, "acme")
    r = client.post("/v1/workloads", json={**workload_body(4), "gpu_count": 4}, headers=acme.headers)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM and "gpu_count" in r.json()["detail"]
    assert client.get("/v1/workloads", headers=acme.headers).json()["items"] == []


@pytest.mark.parametrize("version", [0, 99])
def test_a_version_out_of_range_gets_400_naming_the_range(
    client: TestClient, runtime: Runtime, site: str, version: int
) -> None:
    ops = make_operator_key(runtime)
    token = bootstrap_token(runtime)
    body = {"protocol_version": version, "bootstrap_token": token, "inventory": inventory(1).model_dump(mode="json")}
    supported = f"versions {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"

    def refused(r: Any) -> None:
        assert r.status_code == 400, r.text
        assert r.headers["content-type"] == PROBLEM
        assert f"protocol version {version} is not supported" in r.json()["detail"]
        assert supported in r.json()["detail"]

    refused(client.post("/v1/agent/register", json=body))
    assert client.get("/v1/operator/nodes", headers=ops).json() == []
    # The refusal left the single-use token unspent: the agent steps down and registers with it.
    r = client.post("/v1/agent/register", json={**body, "protocol_version": MIN_PROTOCOL_VERSION})
    assert r.status_code == 201, r.text
    node_id, credential = r.json()["node_id"], r.json()["credential"]
    headers = {"Authorization": f"Bearer {credential}"}
    report = {"protocol_version": version, "seq": 1, "sent_at": time.time(), "gpus": []}
    refused(client.post(f"/v1/agent/nodes/{node_id}/reports", json=report, headers=headers))
    assert runtime.live.report_counts(node_id)[0] == 0  # nothing recorded
    refused(client.get(f"/v1/agent/nodes/{node_id}/desired", params={"protocol": version}, headers=headers))
    upload = {"protocol_version": version, "chunks": []}
    refused(client.post(f"/v1/agent/nodes/{node_id}/logs", json=upload, headers=headers))


def test_an_agent_upgraded_or_rolled_back_in_place_shows_its_versions(
    client: TestClient, runtime: Runtime, site: str
) -> None:
    """The same node, the same report content: only the versions change, and each change reaches SQL."""
    ops = make_operator_key(runtime)
    inv = _v1_inventory(1)
    register = _v1("RegisterRequest", protocol_version=1, bootstrap_token=bootstrap_token(runtime), inventory=inv)
    answer = client.post("/v1/agent/register", content=register.model_dump_json(), headers=JSON).json()
    node_id, headers = answer["node_id"], {"Authorization": f"Bearer {answer['credential']}"}

    def report(seq: int, versions: dict[str, Any]) -> None:
        body = {"seq": seq, "sent_at": time.time(), "gpus": [], **versions}
        r = client.post(f"/v1/agent/nodes/{node_id}/reports", json=body, headers=headers)
        assert r.status_code == 200 and r.json()["accepted"], r.text

    report(1, {"protocol_version": 1})
    report(2, {"protocol_version": 1})  # unchanged: skipped by fingerprint, nothing to update anyway
    assert _node_versions(client, ops) == {node_id: (1, None)}
    report(3, {"protocol_version": 2, "agent_version": "0.2.0"})
    assert _node_versions(client, ops) == {node_id: (2, "0.2.0")}
    report(4, {"protocol_version": 2, "agent_version": "0.2.1"})
    assert _node_versions(client, ops) == {node_id: (2, "0.2.1")}
    report(5, {"protocol_version": 1})  # rolled back: a version-1 agent does not say its version
    assert _node_versions(client, ops) == {node_id: (1, None)}


def test_every_field_newer_than_version_1_says_so() -> None:
    """A field a version-1 peer does not know must carry ``Since``, or it would be sent to one."""
    v1 = v1_protocol()
    checked = 0
    for name, model in vars(protocol).items():
        old = getattr(v1, name, None)
        if not (isinstance(model, type) and issubclass(model, BaseModel) and isinstance(old, type)):
            continue
        assert issubclass(old, BaseModel)
        for field, info in model.model_fields.items():
            known = field in old.model_fields
            assert known == (field_since(info) == 1), f"{name}.{field}: Since({field_since(info)}), in v1: {known}"
        checked += 1
    assert checked >= 10
    assert field_since(protocol.RegisterRequest.model_fields["agent_version"]) == 2
