"""Issue 8 finding 12: the audit log, on PostgreSQL and SQLite.

Every operator action, credential event and tenant policy change is appended (who, what, when,
from where, the request id) in the transaction of the action itself; operators query it with
filters and a cursor, a tenant reads the entries about its own keys, each committed entry is one
JSON log line, and the database refuses to change or remove an entry.

Regression: nothing was recorded anywhere, and responses carried no request id.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from factories import make_operator_key, make_site, make_tenant, register_node
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import DataError, IntegrityError

from controlplane.domain import audit as actions
from controlplane.domain.audit import ActorKind
from controlplane.domain.enums import KeyScope
from controlplane.runtime import Runtime
from controlplane.services import admin, audit
from controlplane.services.auth import authenticate
from controlplane.store.migrate import downgrade, upgrade
from controlplane.store.models import ApiKey, AuditEntry

PROBLEM = "application/problem+json"


@pytest.fixture
def site(runtime: Runtime) -> str:
    return make_site(runtime)


def _key_id(runtime: Runtime, headers: dict[str, str]) -> str:
    with runtime.read() as s:
        return authenticate(s, pepper=runtime.pepper, secret=headers["Authorization"].removeprefix("Bearer ")).key_id


def _entries(client: TestClient, ops: dict[str, str], query: str = "") -> list[dict[str, Any]]:
    r = client.get(f"/v1/operator/audit?limit=200{query}", headers=ops)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def test_operator_actions_are_recorded_with_who_where_and_the_request_id(
    client: TestClient, runtime: Runtime, site: str
) -> None:
    node = register_node(runtime, 1)
    ops = make_operator_key(runtime)
    ops_id = _key_id(runtime, ops)
    calls = [
        ("post", f"/v1/operator/nodes/{node.node_id}/cordon", {"reason": "fan swap"}, actions.NODE_CORDONED),
        ("post", f"/v1/operator/nodes/{node.node_id}/uncordon", None, actions.NODE_UNCORDONED),
        ("post", f"/v1/operator/nodes/{node.node_id}/drain", None, actions.NODE_DRAINED),
        ("post", "/v1/operator/tenants", {"name": "acme"}, actions.TENANT_CREATED),
    ]
    for i, (method, path, body, action) in enumerate(calls):
        r = client.request(method, path, json=body, headers={**ops, "X-Request-ID": f"req-{i}"})
        assert r.status_code in (200, 201), r.text
        assert r.headers["X-Request-ID"] == f"req-{i}"
        [entry] = _entries(client, ops, f"&action={action}")
        assert entry["actor_kind"] == "operator" and entry["actor_id"] == ops_id
        assert entry["address"] == "testclient" and entry["request_id"] == f"req-{i}"
    tenant_id = client.get("/v1/operator/tenants", headers=ops).json()[0]["id"]
    r = client.patch(f"/v1/operator/tenants/{tenant_id}", json={"max_gpus": 8, "spend_cap_usd": "12.50"}, headers=ops)
    assert r.status_code == 200, r.text
    [policy] = _entries(client, ops, f"&action={actions.TENANT_POLICY_CHANGED}")
    assert policy["tenant_id"] == tenant_id and policy["detail"]["changes"] == {"max_gpus": 8, "spend_cap_usd": "12.50"}
    key = client.post(f"/v1/operator/tenants/{tenant_id}/keys", json={"name": "ci"}, headers=ops).json()
    client.post(f"/v1/operator/keys/{key['id']}/revoke", headers=ops)
    client.post(f"/v1/operator/keys/{key['id']}/revoke", headers=ops)  # idempotent: recorded once
    about_key = _entries(client, ops, f"&target_id={key['id']}")
    assert [e["action"] for e in about_key] == [actions.CREDENTIAL_REVOKED, actions.CREDENTIAL_CREATED]
    assert all(e["tenant_id"] == tenant_id and e["detail"]["kind"] == "tenant" for e in about_key)
    # No secret is ever written to the log.
    assert key["secret"] not in json.dumps(_entries(client, ops))


def test_a_failed_action_records_nothing(client: TestClient, runtime: Runtime, site: str) -> None:
    ops = make_operator_key(runtime)
    before = _entries(client, ops)
    r = client.post("/v1/operator/nodes/node_nope/cordon", headers=ops)
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM
    assert _entries(client, ops) == before


def test_request_ids_are_echoed_or_generated(client: TestClient, runtime: Runtime, site: str) -> None:
    given = client.get("/healthz", headers={"X-Request-ID": "trace-1:abc"})
    assert given.headers["X-Request-ID"] == "trace-1:abc"
    made = client.get("/healthz").headers["X-Request-ID"]
    assert len(made) == 32 and made != client.get("/healthz").headers["X-Request-ID"]
    # Not a sane id (too long, spaces): replaced, never refused, never echoed.
    for bad in ("x" * 129, "two words"):
        r = client.get("/healthz", headers={"X-Request-ID": bad})
        assert r.status_code == 200 and r.headers["X-Request-ID"] not in (bad, "")
    # Error answers carry it too.
    r = client.get("/v1/operator/sites", headers={"X-Request-ID": "req-err"})
    assert r.status_code == 401 and r.headers["X-Request-ID"] == "req-err"


def test_first_use_from_a_new_address_is_recorded_once(client: TestClient, runtime: Runtime, site: str) -> None:
    acme = make_tenant(runtime, "acme")
    ops = make_operator_key(runtime)
    for _ in range(3):
        assert client.get("/v1/workloads", headers=acme.headers).status_code == 200
    runtime.principals.forget_key(_key_id(runtime, acme.headers))  # as a restarted API process would
    assert client.get("/v1/workloads", headers=acme.headers).status_code == 200
    used = _entries(client, ops, f"&action={actions.CREDENTIAL_USED_FROM_NEW_ADDRESS}")
    tenant_key = _key_id(runtime, acme.headers)
    mine = [e for e in used if e["target_id"] == tenant_key]
    assert len(mine) == 1 and mine[0]["address"] == "testclient" and mine[0]["tenant_id"] == acme.tenant_id
    assert mine[0]["actor_kind"] == "tenant" and mine[0]["actor_id"] == tenant_key
    # A second address is new again.
    other = TestClient(client.app, client=("203.0.113.9", 5000))
    assert other.get("/v1/workloads", headers=acme.headers).status_code == 200
    used = _entries(client, ops, f"&action={actions.CREDENTIAL_USED_FROM_NEW_ADDRESS}&target_id={tenant_key}")
    assert [e["address"] for e in used] == ["203.0.113.9", "testclient"]


def test_registration_records_the_node_credential_created_by_its_join_token(
    client: TestClient, runtime: Runtime, site: str
) -> None:
    from factories import bootstrap_token, inventory

    from agents.protocol import PROTOCOL_VERSION

    token = bootstrap_token(runtime)
    body = {"protocol_version": PROTOCOL_VERSION, "bootstrap_token": token, "inventory": inventory(1).model_dump()}
    r = client.post("/v1/agent/register", json=body, headers={"X-Request-ID": "join-1"})
    assert r.status_code == 201, r.text
    ops = make_operator_key(runtime)
    created = [
        e for e in _entries(client, ops, f"&action={actions.CREDENTIAL_CREATED}") if e["detail"]["kind"] == "agent"
    ]
    assert len(created) == 1
    entry = created[0]
    assert entry["actor_kind"] == "bootstrap" and entry["actor_id"].startswith("boot_")
    assert entry["detail"]["node_id"] == r.json()["node_id"]
    assert entry["address"] == "testclient" and entry["request_id"] == "join-1"


def test_filters_and_cursor_pages(client: TestClient, runtime: Runtime, site: str) -> None:
    ops = make_operator_key(runtime)
    acme = make_tenant(runtime, "acme")
    t0 = datetime.now(UTC)
    for i in range(7):
        client.patch(f"/v1/operator/tenants/{acme.tenant_id}", json={"max_gpus": i}, headers=ops)
    t1 = datetime.now(UTC) + timedelta(seconds=1)
    seen: list[int] = []
    cursor = ""
    while True:
        page = client.get(f"/v1/operator/audit?action=tenant.policy_changed&limit=3{cursor}", headers=ops).json()
        seen += [e["id"] for e in page["items"]]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert len(seen) == 7 and seen == sorted(seen, reverse=True)
    by_actor = _entries(client, ops, f"&actor={_key_id(runtime, ops)}")
    assert {e["action"] for e in by_actor} == {actions.TENANT_POLICY_CHANGED, actions.CREDENTIAL_USED_FROM_NEW_ADDRESS}
    since = t0.isoformat().replace("+00:00", "Z")
    assert len(_entries(client, ops, f"&action=tenant.policy_changed&since={since}")) == 7
    until = t0.isoformat().replace("+00:00", "%2B00:00")
    assert _entries(client, ops, f"&action=tenant.policy_changed&until={until}") == []
    later = t1.isoformat().replace("+00:00", "Z")
    assert _entries(client, ops, f"&since={later}") == []


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "cursor=0",
        "cursor=9223372036854775808",
        "cursor=abc",
        "since=2026-01-01T00:00:00",  # no time zone
        "since=yesterday",
        "until=2026-13-01T00:00:00Z",
        "actor=ops%00",
        "actor=" + "a" * 65,
        "action=Credential.Revoked",
        "action=credential%E2%80%AE",
        "tenant_id=tnt%0A",
        "target_id=" + "k" * 41,
    ],
)
def test_audit_queries_refuse_bad_input(client: TestClient, runtime: Runtime, site: str, query: str) -> None:
    r = client.get(f"/v1/operator/audit?{query}", headers=make_operator_key(runtime))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM


@contextmanager
def _statements(runtime: Runtime) -> Iterator[list[str]]:
    seen: list[str] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(runtime.engine, "before_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        event.remove(runtime.engine, "before_cursor_execute", on_execute)


def test_a_page_costs_one_statement_whatever_its_size(client: TestClient, runtime: Runtime, site: str) -> None:
    ops = make_operator_key(runtime)
    acme = make_tenant(runtime, "acme")
    counts = []
    for size in (1, 150):
        with runtime.uow() as s:
            for i in range(size):
                audit.record(s, audit.SYSTEM, action=actions.CURTAILMENT_COMMANDED, detail={"i": i})
        client.get("/v1/operator/audit", headers=ops)  # the key is cached now
        client.get("/v1/audit", headers=acme.headers)
        with _statements(runtime) as seen:
            assert len(_entries(client, ops)) >= size
            r = client.get("/v1/audit?limit=200", headers=acme.headers)
            assert r.status_code == 200
        counts.append(len([q for q in seen if q.lstrip().upper().startswith("SELECT")]))
    assert counts[0] == counts[1] == 2, counts  # one per page, whatever its size


def test_a_tenant_sees_only_the_entries_about_its_own_keys(client: TestClient, runtime: Runtime, site: str) -> None:
    ops = make_operator_key(runtime)
    acme, rival = make_tenant(runtime, "acme"), make_tenant(runtime, "rival")
    client.get("/v1/workloads", headers=rival.headers)
    client.patch(f"/v1/operator/tenants/{acme.tenant_id}", json={"max_gpus": 4}, headers=ops)
    extra = client.post(f"/v1/operator/tenants/{acme.tenant_id}/keys", headers=ops).json()
    client.post(f"/v1/operator/keys/{extra['id']}/rotate", headers=ops)
    page = client.get("/v1/audit", headers=acme.headers)
    assert page.status_code == 200, page.text
    entries = page.json()["items"]
    acme_keys = {k.id for k in _keys_of(runtime, acme.tenant_id)}
    assert {e["target_id"] for e in entries} <= acme_keys
    assert [e["action"] for e in entries] == [
        actions.CREDENTIAL_USED_FROM_NEW_ADDRESS,  # this very request's key, first seen here
        actions.CREDENTIAL_ROTATED,
        actions.CREDENTIAL_CREATED,
        actions.CREDENTIAL_CREATED,
    ]
    assert all(e["tenant_id"] == acme.tenant_id for e in entries)
    # Policy changes and the rival's key are operators' business.
    rival_view = client.get("/v1/audit", headers=rival.headers).json()["items"]
    assert all(e["tenant_id"] == rival.tenant_id for e in rival_view) and len(rival_view) == 2
    r = client.get("/v1/audit?limit=0", headers=acme.headers)
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM


def _keys_of(runtime: Runtime, tenant_id: str) -> list[ApiKey]:
    with runtime.read() as s:
        return list(s.scalars(select(ApiKey).where(ApiKey.tenant_id == tenant_id)))


def test_each_committed_entry_is_one_json_log_line(
    runtime: Runtime, site: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="switchyard.audit")
    context = audit.AuditContext(audit.Actor(ActorKind.CLI, "alice"), audit.Origin("local", "cli-1"))
    with runtime.uow() as s:
        acme = admin.create_tenant(s, name="acme")
        issued = admin.issue_api_key(s, pepper=runtime.pepper, scope=KeyScope.TENANT, tenant_id=acme.id, audit=context)
        assert caplog.records == []  # not before the commit
    lines = [r for r in caplog.records if r.name == "switchyard.audit"]
    assert len(lines) == 1
    logged = json.loads(lines[0].getMessage())
    assert logged["action"] == actions.CREDENTIAL_CREATED and logged["target_id"] == issued.key.id
    assert logged["actor_id"] == "alice" and logged["request_id"] == "cli-1" and logged["address"] == "local"
    assert issued.secret not in lines[0].getMessage()
    caplog.clear()
    with pytest.raises(RuntimeError), runtime.uow() as s:
        admin.revoke_api_key(s, key_id=issued.key.id, audit=context)
        raise RuntimeError("the action fails after its entry was written")
    assert caplog.records == []  # rolled back with its action: never exported


def test_no_action_commits_without_its_entry(runtime: Runtime, site: str) -> None:
    """The entry is written in the action's own transaction: when it cannot be written, the
    revocation it records does not happen either."""
    make_tenant(runtime, "acme")
    with runtime.read() as s:
        key = s.scalars(select(ApiKey)).one()
    unwritable = audit.AuditContext(audit.Actor(ActorKind.OPERATOR, "key_x"), audit.Origin("1.2.3.4", "r" * 129))
    with pytest.raises((IntegrityError, DataError)), runtime.uow() as s:
        admin.revoke_api_key(s, key_id=key.id, audit=unwritable)
    with runtime.read() as s:
        assert s.get(ApiKey, key.id).revoked_at is None  # type: ignore[union-attr]
        assert s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.target_id == key.id)) == 1


def _one_entry(runtime: Runtime) -> int:
    with runtime.uow() as s:
        return audit.record(s, audit.SYSTEM, action=actions.CURTAILMENT_COMMANDED, detail={"target_mw": 5}).id


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET action = 'credential.created'",
        "UPDATE audit_log SET detail = '{}' WHERE id = :id",
        "DELETE FROM audit_log WHERE id = :id",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ],
)
def test_the_database_refuses_to_change_or_remove_an_entry(runtime: Runtime, statement: str) -> None:
    entry_id = _one_entry(runtime)
    if statement.startswith("TRUNCATE") and runtime.engine.dialect.name != "postgresql":
        statement = "DELETE FROM audit_log WHERE 1 = 1"  # SQLite has no TRUNCATE: its DELETE form
    with pytest.raises(IntegrityError, match="append-only"), runtime.engine.begin() as conn:
        conn.execute(text(statement), {"id": entry_id})
    with runtime.read() as s:
        entry = s.get(AuditEntry, entry_id)
        assert entry is not None and entry.action == actions.CURTAILMENT_COMMANDED and entry.detail == {"target_mw": 5}


def test_the_code_has_no_update_or_delete_path(runtime: Runtime) -> None:
    entry_id = _one_entry(runtime)
    for change in ("update", "delete"):
        with pytest.raises(PermissionError, match="append-only"), runtime.uow() as s:
            entry = s.get(AuditEntry, entry_id)
            assert entry is not None
            if change == "update":
                entry.action = "node.cordoned"
            else:
                s.delete(entry)
            s.flush()
    with runtime.read() as s:
        assert s.get(AuditEntry, entry_id).action == actions.CURTAILMENT_COMMANDED  # type: ignore[union-attr]


def test_the_recorder_is_generic_and_refuses_malformed_actions(runtime: Runtime) -> None:
    from controlplane.domain.errors import InvalidRequest

    dispatcher = audit.AuditContext(audit.Actor(ActorKind.SYSTEM, "dispatcher"))
    with runtime.uow() as s:
        entry = audit.record(
            s,
            dispatcher,
            action=actions.CURTAILMENT_COMMANDED,
            target_kind="site",
            target_id="site_1",
            detail={"target_mw": "4.5", "window_s": 900},
        )
    assert entry.id > 0
    with runtime.uow() as s:  # JSON has no infinity; the entry must still be written, on PostgreSQL too
        odd = audit.record(s, dispatcher, action=actions.CURTAILMENT_COMMANDED, detail={"limit": float("inf")})
    with runtime.read() as s:
        assert s.get(AuditEntry, odd.id).detail == {"limit": "inf"}  # type: ignore[union-attr]
    for bad in ("", "curtail", "Curtailment.Commanded", "a." + "b" * 70):
        with pytest.raises(InvalidRequest), runtime.uow() as s:
            audit.record(s, dispatcher, action=bad)


def test_migration_round_trip_keeps_working_with_entries_and_triggers(db_url: str, runtime: Runtime) -> None:
    make_site(runtime)
    _one_entry(runtime)
    with runtime.uow() as s:
        token, _ = admin.issue_bootstrap_token(s, pepper=runtime.pepper, site_name="demo-rack", rack=None, ttl_s=60)
        admin.revoke_bootstrap_token(s, token_id=token.id)
    runtime.engine.dispose()
    downgrade(db_url, "0004")
    with runtime.engine.connect() as conn:
        # The older schema has no "revoked": the revoked token became a used one, not a live one.
        used = conn.execute(text("SELECT used_at FROM bootstrap_tokens WHERE id = :id"), {"id": token.id}).scalar()
        assert used is not None
    runtime.engine.dispose()
    upgrade(db_url)
    runtime.engine.dispose()
    entry_id = _one_entry(runtime)
    with pytest.raises(IntegrityError), runtime.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": entry_id})
