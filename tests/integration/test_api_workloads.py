"""Tenant API: submission, idempotency, isolation, bad input. Runs on PostgreSQL and SQLite."""

from __future__ import annotations

from typing import Any

import pytest
from factories import make_operator_key, make_site, make_tenant, workload_body
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from controlplane.runtime import Runtime
from controlplane.store.models import Workload, WorkloadEvent

PROBLEM = "application/problem+json"


@pytest.fixture
def site(runtime: Runtime) -> str:
    return make_site(runtime)


def _count(runtime: Runtime) -> tuple[int | None, int | None]:
    with runtime.sessions() as s:
        return s.scalar(select(func.count()).select_from(Workload)), s.scalar(
            select(func.count()).select_from(WorkloadEvent)
        )


def test_submit_get_list_cancel(client: TestClient, runtime: Runtime, site: str) -> None:
    acme = make_tenant(runtime, "acme")
    r = client.post("/v1/workloads", json=workload_body(4, name="train"), headers=acme.headers)
    assert r.status_code == 201, r.text
    wl = r.json()
    assert wl["state"] == "pending" and wl["pending_reason"] and wl["gpus"] == 4
    assert r.headers["Location"] == f"/v1/workloads/{wl['id']}"

    got = client.get(f"/v1/workloads/{wl['id']}", headers=acme.headers).json()
    assert got["history"][0]["to_state"] == "pending"
    listed = client.get("/v1/workloads", params={"state": "pending"}, headers=acme.headers).json()
    assert [w["id"] for w in listed["items"]] == [wl["id"]]

    r = client.post(f"/v1/workloads/{wl['id']}/cancel", json={"reason": "changed my mind"}, headers=acme.headers)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert r.json()["reason"] == "changed my mind"
    again = client.post(f"/v1/workloads/{wl['id']}/cancel", headers=acme.headers)
    assert again.status_code == 409 and again.headers["content-type"] == PROBLEM


def test_pagination_is_stable_and_complete(client: TestClient, runtime: Runtime, site: str) -> None:
    acme = make_tenant(runtime, "acme")
    ids = {client.post("/v1/workloads", json=workload_body(1), headers=acme.headers).json()["id"] for _ in range(7)}
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/workloads", params=params, headers=acme.headers).json()
        seen += [w["id"] for w in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 7 and set(seen) == ids and seen == sorted(seen, reverse=True)


def test_idempotent_submission(client: TestClient, runtime: Runtime, site: str) -> None:
    acme = make_tenant(runtime, "acme")
    headers = {**acme.headers, "Idempotency-Key": "job-42"}
    first = client.post("/v1/workloads", json=workload_body(4), headers=headers)
    second = client.post("/v1/workloads", json=workload_body(4), headers=headers)
    assert first.status_code == 201 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert _count(runtime) == (1, 1)

    conflict = client.post("/v1/workloads", json=workload_body(8), headers=headers)
    assert conflict.status_code == 409 and conflict.headers["content-type"] == PROBLEM
    assert "Idempotency-Key" in conflict.json()["detail"]

    # The key is per tenant: another tenant may use the same one.
    other = make_tenant(runtime, "other")
    r = client.post("/v1/workloads", json=workload_body(4), headers={**other.headers, "Idempotency-Key": "job-42"})
    assert r.status_code == 201 and r.json()["id"] != first.json()["id"]
    assert _count(runtime)[0] == 2


def test_tenant_isolation_on_every_workload_route(client: TestClient, runtime: Runtime, site: str) -> None:
    acme = make_tenant(runtime, "acme")
    rival = make_tenant(runtime, "rival")
    wl = client.post("/v1/workloads", json=workload_body(4), headers=acme.headers).json()
    missing = "wl_00000000000000000000000000"
    for path, method in [
        (f"/v1/workloads/{wl['id']}", "GET"),
        (f"/v1/workloads/{wl['id']}/cancel", "POST"),
        (f"/v1/workloads/{wl['id']}/logs", "GET"),
    ]:
        theirs = client.request(method, path, headers=rival.headers)
        absent = client.request(method, path.replace(wl["id"], missing), headers=rival.headers)
        # Another tenant's workload is indistinguishable from one that does not exist.
        assert theirs.status_code == absent.status_code == 404, (path, theirs.text)
        assert theirs.headers["content-type"] == PROBLEM
        assert theirs.json()["detail"].replace(wl["id"], "X") == absent.json()["detail"].replace(missing, "X")
    assert client.get("/v1/workloads", headers=rival.headers).json()["items"] == []
    # Untouched by the rival's attempts.
    assert client.get(f"/v1/workloads/{wl['id']}", headers=acme.headers).json()["state"] == "pending"


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        ({**workload_body(4), "colour": "blue"}, 422, "colour"),
        (workload_body(-1), 422, "gpus"),
        (workload_body(0), 422, "gpus"),
        (workload_body(10_000), 422, "10000"),
        ({**workload_body(), "gpus": "4"}, 422, "gpus"),
        (workload_body(True), 422, "gpus"),
        (workload_body(4, command=[]), 422, "command"),
        (workload_body(4, priority="mining"), 422, "priority"),
        (workload_body(4, nvlink="sometimes"), 422, "nvlink"),
        (workload_body(4, gpu_model="NVIDIA H100"), 422, "not offered"),
        (workload_body(4, env={"CUDA_VISIBLE_DEVICES": "0"}), 422, "CUDA_VISIBLE_DEVICES"),
        (workload_body(4, env={"1BAD": "x"}), 422, "1BAD"),
        (workload_body(4, max_duration_s=-5), 422, "max_duration_s"),
        ([1, 2, 3], 422, "body"),
        # Issue 8: a NUL no process can receive (Popen raised and wedged the agent), a name that
        # spoofs another in an operator's table, a spec larger than any job needs.
        (workload_body(4, env={"TOKEN": "abc\x00def"}), 422, "env.TOKEN"),
        (workload_body(4, command=["python3", "-c", "print(1)\x00"]), 422, "command.2"),
        (workload_body(4, name="train\u202egnp.exe"), 422, "U+202E"),
        (workload_body(4, env={f"V{i}": "x" for i in range(129)}), 422, "env"),
        (workload_body(4, env={f"V{i}": "x" * 16384 for i in range(5)}), 422, "65536 bytes"),
    ],
)
def test_bad_input_is_a_problem_and_changes_nothing(
    client: TestClient, runtime: Runtime, site: str, body: object, status: int, fragment: str
) -> None:
    acme = make_tenant(runtime, "acme")
    before = _count(runtime)
    r = client.post("/v1/workloads", json=body, headers=acme.headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    problem = r.json()
    assert problem["status"] == status and fragment in r.text
    assert _count(runtime) == before


@pytest.mark.parametrize(
    "content, content_type",
    [
        (b'{"gpus": 4, "command": ["x"]', "application/json"),
        (b"gpus=4", "application/json"),
        (b"", "application/json"),
        # Issue 8: the last duplicate won (a 72-GPU workload), other media types were read as JSON.
        (b'{"gpus": 1, "command": ["x"], "gpus": 72}', "application/json"),
        ('{"gpus": 1, "command": ["x"]}'.encode("utf-16"), "application/json; charset=utf-16"),
        (b'{"gpus": 1, "command": ["x"]}', "application/vnd.evil+json"),
    ],
)
def test_malformed_json(client: TestClient, runtime: Runtime, site: str, content: bytes, content_type: str) -> None:
    acme = make_tenant(runtime, "acme")
    before = _count(runtime)
    r = client.post("/v1/workloads", content=content, headers={**acme.headers, "Content-Type": content_type})
    assert r.status_code in (400, 415, 422), r.text
    assert r.headers["content-type"] == PROBLEM
    assert _count(runtime) == before


@pytest.mark.parametrize("limit", [b"Infinity", b'"Infinity"', b"1e400", b"NaN"])
def test_an_infinite_quota_is_refused(client: TestClient, runtime: Runtime, limit: bytes) -> None:
    """Issue 8: Infinity was stored as a GPU-hours limit, which every check then read as none."""
    acme = make_tenant(runtime, "acme")
    ops = make_operator_key(runtime)
    body = b'{"gpu_hours_limit": ' + limit + b"}"
    r = client.patch(
        f"/v1/operator/tenants/{acme.tenant_id}", content=body, headers={**ops, "Content-Type": "application/json"}
    )
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, r.text
    tenants = client.get("/v1/operator/tenants", headers=ops).json()
    assert [t["gpu_hours_limit"] for t in tenants] == [None]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer sy_tenant_notakey",
        # Well-formed but unknown: the right shape with a valid checksum, never issued.
        "UNKNOWN",
        # A well-formed key of the wrong audience.
        "OPERATOR",
    ],
)
def test_wrong_token(client: TestClient, runtime: Runtime, site: str, authorization: str | None) -> None:
    from controlplane.domain import keys
    from controlplane.domain.enums import KeyScope

    if authorization == "UNKNOWN":
        authorization = f"Bearer {keys.generate(KeyScope.TENANT)}"
    elif authorization == "OPERATOR":
        authorization = make_operator_key(runtime)["Authorization"]
    headers = {"Authorization": authorization} if authorization else {}
    before = _count(runtime)
    r = client.post("/v1/workloads", json=workload_body(4), headers=headers)
    assert r.status_code in (401, 403), r.text
    assert r.headers["content-type"] == PROBLEM
    assert _count(runtime) == before


def test_revoked_key_is_refused(client: TestClient, runtime: Runtime, site: str) -> None:
    acme = make_tenant(runtime, "acme")
    ops = make_operator_key(runtime)
    keys = client.get(f"/v1/operator/tenants/{acme.tenant_id}/keys", headers=ops).json()
    assert client.post(f"/v1/operator/keys/{keys[0]['id']}/revoke", headers=ops).status_code == 200
    assert client.get("/v1/workloads", headers=acme.headers).status_code == 401


def test_offerings_and_openapi(client: TestClient, runtime: Runtime, site: str) -> None:
    acme = make_tenant(runtime, "acme")
    offers = client.get("/v1/offerings", headers=acme.headers).json()
    assert offers == [
        {
            "gpu_model": "NVIDIA GB300",
            "memory_mib": 0,
            "total": 72,
            "available": 0,
            "largest_node_block": 0,
            "largest_nvlink_block": 0,
        }
    ]
    spec = client.get("/v1/openapi.json").json()
    assert "/v1/workloads" in spec["paths"] and "/v1/agent/nodes/{node_id}/desired" in spec["paths"]


def test_unknown_route_is_problem_json(client: TestClient) -> None:
    r = client.get("/v1/nope")
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
