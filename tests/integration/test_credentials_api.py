"""Issue 8 finding 6: every credential kind is listed, revoked and rotated through the API, and a
node's view names its credential. On PostgreSQL and SQLite, through the real app and Redis.

Regression: agent and operator keys could not be listed (only a tenant's keys were), a node's
view did not say which credential it used, nothing could be rotated, and a join token could not
be revoked; so a stolen node credential could be revoked only with SQL.
"""

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
    make_tenant,
    register_node,
)
from fastapi.testclient import TestClient

from agents.protocol import PROTOCOL_VERSION
from controlplane.runtime import Runtime
from controlplane.services import admin
from controlplane.services.auth import authenticate

PROBLEM = "application/problem+json"


@pytest.fixture
def site(runtime: Runtime) -> str:
    return make_site(runtime)


def _report(node: RegisteredNode, seq: int) -> dict[str, Any]:
    return {
        "protocol_version": PROTOCOL_VERSION,
        "seq": seq,
        "sent_at": time.time(),
        "gpus": [{"uuid": g.uuid, "index": g.index, "energy_mj": 1000 * seq} for g in node.inventory.gpus],
        "assignments": [],
        "applied_generation": 0,
    }


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _refused(r: Any, status: int = 401) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM


def test_a_stolen_node_credential_is_found_revoked_and_replaced(
    client: TestClient, runtime: Runtime, site: str
) -> None:
    node = register_node(runtime, 1)
    ops = make_operator_key(runtime)
    reports = f"/v1/agent/nodes/{node.node_id}/reports"
    desired = f"/v1/agent/nodes/{node.node_id}/desired"
    assert client.post(reports, json=_report(node, 1), headers=node.headers).status_code == 200

    # The node's view names its credential, and the agent keys can be listed.
    view = client.get(f"/v1/operator/nodes/{node.node_id}", headers=ops).json()
    key_id = view["credential_id"]
    assert key_id and key_id.startswith("key_")
    assert client.get("/v1/operator/nodes", headers=ops).json()[0]["credential_id"] == key_id
    agents = client.get("/v1/operator/keys?scope=agent", headers=ops).json()
    assert [(k["id"], k["node_id"], k["revoked_at"]) for k in agents["items"]] == [(key_id, node.node_id, None)]
    assert all(k.get("secret") is None for k in agents["items"])

    revoked = client.post(f"/v1/operator/keys/{key_id}/revoke", headers=ops)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    _refused(client.post(reports, json=_report(node, 2), headers=node.headers))
    _refused(client.get(desired, headers=node.headers))
    assert client.get(f"/v1/operator/nodes/{node.node_id}", headers=ops).json()["credential_id"] is None

    # The node cannot register again (its GPUs are known): rotating the revoked key re-credentials it.
    rotated = client.post(f"/v1/operator/keys/{key_id}/rotate", headers=ops)
    assert rotated.status_code == 201, rotated.text
    new = rotated.json()
    assert new["secret"].startswith("sy_agent_") and new["node_id"] == node.node_id and new["id"] != key_id
    assert client.post(reports, json=_report(node, 3), headers=_bearer(new["secret"])).status_code == 200
    assert client.get(desired, headers=_bearer(new["secret"])).status_code == 200
    _refused(client.post(reports, json=_report(node, 4), headers=node.headers))
    assert client.get(f"/v1/operator/nodes/{node.node_id}", headers=ops).json()["credential_id"] == new["id"]
    # A key is rotated once: a second rotation would give the node two live credentials.
    again = client.post(f"/v1/operator/keys/{key_id}/rotate", headers=ops)
    _refused(again, 409)
    listed = client.get(f"/v1/operator/keys?node_id={node.node_id}", headers=ops).json()["items"]
    assert {k["id"]: k["replaced_by_id"] for k in listed} == {new["id"]: None, key_id: new["id"]}


def test_rotation_stops_the_old_secret_at_once(client: TestClient, runtime: Runtime, site: str) -> None:
    acme = make_tenant(runtime, "acme")
    ops = make_operator_key(runtime)
    assert client.get("/v1/workloads", headers=acme.headers).status_code == 200  # cached by this process now
    key_id = client.get(f"/v1/operator/keys?tenant_id={acme.tenant_id}", headers=ops).json()["items"][0]["id"]
    r = client.post(f"/v1/operator/keys/{key_id}/rotate", headers=ops)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["secret"].startswith("sy_tenant_") and body["tenant_id"] == acme.tenant_id
    _refused(client.get("/v1/workloads", headers=acme.headers))
    assert client.get("/v1/workloads", headers=_bearer(body["secret"])).status_code == 200
    # The secret is never shown again.
    listed = client.get(f"/v1/operator/keys?tenant_id={acme.tenant_id}", headers=ops).json()["items"]
    assert [k["secret"] for k in listed] == [None, None]


def test_operator_keys_are_listed_and_revoked(client: TestClient, runtime: Runtime, site: str) -> None:
    ops = make_operator_key(runtime)
    other = make_operator_key(runtime)
    page = client.get("/v1/operator/keys?scope=operator&limit=1", headers=ops).json()
    assert len(page["items"]) == 1 and page["next_cursor"]
    rest = client.get(f"/v1/operator/keys?scope=operator&cursor={page['next_cursor']}", headers=ops).json()
    ids = [k["id"] for k in page["items"] + rest["items"]]
    assert len(set(ids)) == 2 and rest["next_cursor"] is None
    assert client.get("/v1/operator/sites", headers=other).status_code == 200
    with runtime.read() as s:
        other_id = authenticate(s, pepper=runtime.pepper, secret=other["Authorization"][7:]).key_id
    assert client.post(f"/v1/operator/keys/{other_id}/revoke", headers=ops).status_code == 200
    _refused(client.get("/v1/operator/sites", headers=other))
    active = client.get("/v1/operator/keys?scope=operator&active=true", headers=ops).json()["items"]
    assert [k["id"] for k in active] == [i for i in ids if i != other_id]


def test_a_revoked_credential_gets_no_desired_state_even_from_another_replica(
    client: TestClient, runtime: Runtime, site: str
) -> None:
    """Revoked through another process, this one's cache still trusts the key for a few seconds:
    the desired state (which carries tenants' env) is refused all the same."""
    node = register_node(runtime, 1)
    desired = f"/v1/agent/nodes/{node.node_id}/desired"
    assert client.get(desired, headers=node.headers).status_code == 200  # the key is now cached
    with runtime.uow() as s:
        key = admin.list_api_keys(s, where=admin.KeyFilter(node_id=node.node_id), limit=1, cursor=None).items[0]
        admin.revoke_api_key(s, key_id=key.id)
    _refused(client.get(desired, headers=node.headers))


def test_join_tokens_are_listed_revoked_and_rotated(client: TestClient, runtime: Runtime, site: str) -> None:
    ops = make_operator_key(runtime)
    first, second = bootstrap_token(runtime), bootstrap_token(runtime)
    page = client.get("/v1/operator/bootstrap-tokens", headers=ops).json()
    assert [t["status"] for t in page["items"]] == ["active", "active"]
    assert {t["display_prefix"] for t in page["items"]} == {first[:14], second[:14]}
    by_prefix = {t["display_prefix"]: t["id"] for t in page["items"]}

    def register(token: str, index: int) -> Any:
        body = {
            "protocol_version": PROTOCOL_VERSION,
            "bootstrap_token": token,
            "inventory": inventory(index).model_dump(),
        }
        return client.post("/v1/agent/register", json=body)

    revoked = client.post(f"/v1/operator/bootstrap-tokens/{by_prefix[first[:14]]}/revoke", headers=ops)
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    r = register(first, 1)
    _refused(r)
    assert "revoked" in r.json()["detail"]

    rotated = client.post(f"/v1/operator/bootstrap-tokens/{by_prefix[second[:14]]}/rotate", headers=ops)
    assert rotated.status_code == 201, rotated.text
    fresh = rotated.json()["secret"]
    assert fresh.startswith("sy_boot_") and rotated.json()["rack_id"] is not None
    _refused(register(second, 2))
    assert register(fresh, 3).status_code == 201
    _refused(client.post(f"/v1/operator/bootstrap-tokens/{rotated.json()['id']}/rotate", headers=ops), 409)
    statuses = {t["id"]: t["status"] for t in client.get("/v1/operator/bootstrap-tokens", headers=ops).json()["items"]}
    assert sorted(statuses.values()) == ["revoked", "revoked", "used"]
    unused = client.get("/v1/operator/bootstrap-tokens?unused=true", headers=ops).json()["items"]
    assert unused == []


def test_a_tenant_manages_only_its_own_keys(client: TestClient, runtime: Runtime, site: str) -> None:
    acme, rival = make_tenant(runtime, "acme"), make_tenant(runtime, "rival")
    mine = client.get("/v1/keys", headers=acme.headers).json()["items"]
    theirs = client.get("/v1/keys", headers=rival.headers).json()["items"]
    assert len(mine) == 1 and len(theirs) == 1 and mine[0]["tenant_id"] == acme.tenant_id
    # Another tenant's key answers like a missing one, and is not touched.
    _refused(client.post(f"/v1/keys/{theirs[0]['id']}/rotate", headers=acme.headers), 404)
    _refused(client.post(f"/v1/keys/{theirs[0]['id']}/revoke", headers=acme.headers), 404)
    assert client.get("/v1/workloads", headers=rival.headers).status_code == 200
    rotated = client.post(f"/v1/keys/{mine[0]['id']}/rotate", headers=acme.headers)
    assert rotated.status_code == 201, rotated.text
    _refused(client.get("/v1/workloads", headers=acme.headers))
    fresh = _bearer(rotated.json()["secret"])
    assert client.post(f"/v1/keys/{rotated.json()['id']}/revoke", headers=fresh).status_code == 200
    _refused(client.get("/v1/workloads", headers=fresh))


@pytest.mark.parametrize(
    "path",
    [
        "/v1/operator/keys?limit=0",
        "/v1/operator/keys?limit=201",
        "/v1/operator/keys?scope=root",
        "/v1/operator/keys?cursor=key%00x",
        "/v1/operator/keys?tenant_id=%E2%80%AEevil",
        "/v1/operator/keys?active=maybe",
        "/v1/operator/bootstrap-tokens?limit=100000",
        "/v1/operator/bootstrap-tokens?site_id=" + "a" * 41,
    ],
)
def test_credential_lists_refuse_bad_input(client: TestClient, runtime: Runtime, site: str, path: str) -> None:
    ops = make_operator_key(runtime)
    _refused(client.get(path, headers=ops), 422)


@pytest.mark.parametrize(
    "path, detail",
    [
        ("/v1/operator/keys/key_nope/rotate", "no API key 'key_nope'"),
        ("/v1/operator/bootstrap-tokens/boot_nope/revoke", "no bootstrap token 'boot_nope'"),
        ("/v1/operator/bootstrap-tokens/boot_nope/rotate", "no bootstrap token 'boot_nope'"),
    ],
)
def test_unknown_credentials_answer_404(
    client: TestClient, runtime: Runtime, site: str, path: str, detail: str
) -> None:
    r = client.post(path, headers=make_operator_key(runtime))
    _refused(r, 404)
    assert r.json()["detail"] == detail


def test_tenants_and_agents_cannot_manage_credentials(client: TestClient, runtime: Runtime, site: str) -> None:
    acme = make_tenant(runtime, "acme")
    node = register_node(runtime, 1)
    for headers in (acme.headers, node.headers):
        _refused(client.get("/v1/operator/keys", headers=headers), 403)
        _refused(client.get("/v1/operator/audit", headers=headers), 403)
        _refused(client.get("/v1/operator/bootstrap-tokens", headers=headers), 403)
