"""The report path keeps the books (issue 8, findings 3 to 5), on both databases and a real Redis.

3. A node reports only its own GPUs: samples, energy, health and events of any other UUID are
   dropped and never stored, and an inventory never grows past the rack's shape.
4. Every field is bounded and checked before anything is written: a bad counter never reaches a
   total, a bad seq never wedges a node, a bad time never gives a 500, and a report is recorded
   whole or not at all.
5. A report whose database step fails is not marked seen: the agent's retry lands.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
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
from sqlalchemy import text

from agents.protocol import MAX_ENERGY_MJ, PROTOCOL_VERSION, SEQ_JUMP_ALLOWANCE, ReportRequest
from controlplane.live.nodes import MAX_ENERGY_TOTAL_MJ
from controlplane.runtime import Runtime
from controlplane.services.agents import ingest, reports

PROBLEM = "application/problem+json"


@pytest.fixture
def site(runtime: Runtime) -> str:
    return make_site(runtime)


def _gpu(uuid: str, index: int, **fields: Any) -> dict[str, Any]:
    return {"uuid": uuid, "index": index, **fields}


def _body(node: RegisteredNode, seq: int, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "protocol_version": PROTOCOL_VERSION,
        "seq": seq,
        "sent_at": time.time(),
        "gpus": [_gpu(g.uuid, g.index, power_w=180.0, energy_mj=1000 * seq) for g in node.inventory.gpus],
    }
    body.update(overrides)
    return body


def _post(client: TestClient, node: RegisteredNode, body: dict[str, Any]) -> Any:
    # Python's own encoder, which writes NaN and Infinity as the JavaScript literals a peer may send.
    headers = {**node.headers, "Content-Type": "application/json"}
    return client.post(f"/v1/agent/nodes/{node.node_id}/reports", content=json.dumps(body), headers=headers)


def _redis_state(runtime: Runtime, node_id: str) -> dict[str, Any]:
    """Everything Redis holds about a node's reports: a refused report must leave it as it was."""
    r, keys = runtime.redis, runtime.keys
    return {
        "seq": r.get(keys.node_seq(node_id)),
        "gpus": r.hgetall(keys.node_gpus(node_id)),
        "energy": r.hgetall(keys.node_energy(node_id)),
        "lease": r.zscore(keys.leases, node_id),
    }


def _gpus_view(client: TestClient, ops: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {g["uuid"]: g for g in client.get("/v1/operator/gpus", headers=ops).json()}


# -- finding 3: a node reports only its own GPUs ----------------------------------------------------


def test_a_node_cannot_write_another_node_s_telemetry_energy_health_or_events(
    client: TestClient, runtime: Runtime, site: str
) -> None:
    ops = make_operator_key(runtime)
    a, b = register_node(runtime, 1), register_node(runtime, 2)
    for seq in (1, 2):
        assert _post(client, a, _body(a, seq)).json()["accepted"]
    victim = a.inventory.gpus[0].uuid
    forged = [_gpu(g.uuid, g.index, power_w=9999.0, energy_mj=10**12 * seq) for seq in (1,) for g in a.inventory.gpus]
    for seq in (1, 2):
        body = _body(b, seq)
        body["gpus"] += [
            {**g, "energy_mj": g["energy_mj"] * seq, "health": "unhealthy", "health_reasons": ["forged"]}
            for g in forged
        ]
        body["xid_events"] = [{"uuid": victim, "xid": 79, "at": time.time(), "detail": "forged"}]
        r = _post(client, b, body)
        assert r.status_code == 200 and r.json()["accepted"], r.text  # B's own samples still count

    view = _gpus_view(client, ops)
    for g in a.inventory.gpus:
        assert view[g.uuid]["telemetry"]["power_w"] == 180.0
        assert view[g.uuid]["energy_mj_total"] == 1000  # A's own delta, from 1000 to 2000 mJ
        assert view[g.uuid]["health"] == "healthy"
    for g in b.inventory.gpus:
        assert view[g.uuid]["telemetry"]["power_w"] == 180.0 and view[g.uuid]["energy_mj_total"] == 1000
    events = client.get(f"/v1/operator/gpus/{view[victim]['id']}/events", headers=ops).json()
    assert events == []
    node_a = client.get(f"/v1/operator/nodes/{a.node_id}", headers=ops).json()
    assert {g["uuid"]: g["telemetry"]["power_w"] for g in node_a["gpus"]} == {g.uuid: 180.0 for g in a.inventory.gpus}
    # Nothing of A's GPUs is stored under B.
    stored = _redis_state(runtime, b.node_id)
    assert set(stored["gpus"]) == {g.uuid for g in b.inventory.gpus}
    assert not [k for k in stored["energy"] if k.startswith(victim)]


def test_made_up_gpu_uuids_never_grow_redis(client: TestClient, runtime: Runtime, site: str) -> None:
    node = register_node(runtime, 1)
    for seq in range(1, 6):
        body = _body(node, seq)
        body["gpus"] += [_gpu(f"GPU-made-up-{seq}-{i}", 4 + i, energy_mj=seq * 1000, power_w=1.0) for i in range(60)]
        assert _post(client, node, body).status_code == 200
    stored = _redis_state(runtime, node.node_id)
    own = {g.uuid for g in node.inventory.gpus}
    assert set(stored["gpus"]) == own
    assert {k.rsplit(":", 1)[0] for k in stored["energy"] if not k.startswith("reports:")} == own
    assert runtime.redis.scard(runtime.keys.node_gpu_uuids(node.node_id)) == len(own) + 1  # and the sentinel


def test_what_older_code_stored_of_other_gpus_is_purged_by_the_next_fold(
    client: TestClient, runtime: Runtime, site: str
) -> None:
    node = register_node(runtime, 1)
    assert _post(client, node, _body(node, 1)).status_code == 200
    keys = runtime.keys
    # What the code before these checks wrote for a forged UUID (it stored any UUID it was sent).
    runtime.redis.hset(keys.node_gpus(node.node_id), "GPU-forged", json.dumps({"power_w": 9999.0}))
    runtime.redis.hset(keys.node_energy(node.node_id), mapping={"GPU-forged:last": 5, "GPU-forged:total": -10_003_500})
    status = {"workload_id": "wl_1", "epoch": 1, "rank": 0, "phase": "running"}
    assert _post(client, node, _body(node, 2, assignments=[status])).status_code == 200  # reaches SQL
    stored = _redis_state(runtime, node.node_id)
    own = {g.uuid for g in node.inventory.gpus}
    assert set(stored["gpus"]) == own
    assert {k.rsplit(":", 1)[0] for k in stored["energy"] if not k.startswith("reports:")} == own


def test_an_inventory_cannot_grow_past_the_rack_s_shape(client: TestClient, runtime: Runtime, site: str) -> None:
    ops = make_operator_key(runtime)
    node = register_node(runtime, 1)
    assert _post(client, node, _body(node, 1)).status_code == 200
    before = _redis_state(runtime, node.node_id)
    grown = inventory(1, gpus=16).model_dump(mode="json")  # the node's 4 GPUs and 12 more
    r = _post(client, node, _body(node, 2, inventory=grown))
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, r.text
    assert "16 GPUs" in r.json()["detail"]
    assert _redis_state(runtime, node.node_id) == before  # refused before any write, the lease included
    assert len(client.get(f"/v1/operator/nodes/{node.node_id}", headers=ops).json()["gpus"]) == 4
    offers = client.get("/v1/offerings", headers=make_tenant(runtime, "acme").headers).json()
    assert offers[0]["available"] == 4  # the scheduler sees 4 GPUs on this node, no more
    # Registration too: a node of this rack has 4 GPUs.
    body = {"protocol_version": PROTOCOL_VERSION, "bootstrap_token": bootstrap_token(runtime)}
    r = client.post("/v1/agent/register", json={**body, "inventory": inventory(2, gpus=8).model_dump(mode="json")})
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, r.text
    assert len(client.get("/v1/operator/nodes", headers=ops).json()) == 1


def test_gpu_swaps_cannot_grow_a_node_s_records_without_bound(client: TestClient, runtime: Runtime, site: str) -> None:
    ops = make_operator_key(runtime)
    node = register_node(runtime, 1)
    base = node.inventory.model_dump(mode="json")
    statuses = []
    for swap in range(1, 5):  # every GPU swapped at once: 4 records more each time
        gpus = [{**g, "uuid": f"GPU-swap-{swap}-{g['index']}"} for g in base["gpus"]]
        statuses.append(_post(client, node, _body(node, swap, inventory={**base, "gpus": gpus})).status_code)
    assert statuses == [200, 200, 200, 422]  # 16 records (4 per slot) at most
    listed = client.get(f"/v1/operator/nodes/{node.node_id}", headers=ops).json()["gpus"]
    assert len(listed) == 16 and sum(g["present"] for g in listed) == 4


# -- finding 4: every field bounded, checked before any write, all or nothing ----------------------


def _energy(runtime: Runtime, node: RegisteredNode) -> tuple[int, int]:
    count = runtime.live.energy([node.node_id])[node.node_id][node.inventory.gpus[0].uuid]
    return count.total_mj, count.last_counter_mj


def _one_gpu(node: RegisteredNode, seq: int, energy_mj: object) -> dict[str, Any]:
    return _body(node, seq, gpus=[_gpu(node.inventory.gpus[0].uuid, 0, energy_mj=energy_mj)])


def test_a_negative_energy_counter_never_reaches_a_total(client: TestClient, runtime: Runtime, site: str) -> None:
    node = register_node(runtime, 1)
    assert _post(client, node, _one_gpu(node, 1, 1_000_000)).status_code == 200
    r = _post(client, node, _one_gpu(node, 2, -10_000_000))
    assert r.status_code == 200 and r.json()["accepted"]  # the counter reads as absent; the report counts
    assert _energy(runtime, node) == (0, 1_000_000)
    assert _post(client, node, _one_gpu(node, 3, 1_100_000)).status_code == 200
    assert _energy(runtime, node) == (100_000, 1_100_000)


def test_an_energy_counter_of_10_30_mj_is_no_500_and_writes_nothing_of_it(
    client: TestClient, runtime: Runtime, site: str
) -> None:
    node = register_node(runtime, 1)
    assert _post(client, node, _one_gpu(node, 1, 1000)).status_code == 200
    # Past 64 bits, the body is refused whole at the API's edge (strict JSON), nothing written.
    before = _redis_state(runtime, node.node_id)
    r = _post(client, node, _one_gpu(node, 2, 10**30))
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, r.text
    assert _redis_state(runtime, node.node_id) == before
    # Within 64 bits but past any physical counter, the reading is absent and the report lands.
    r = _post(client, node, _one_gpu(node, 2, MAX_ENERGY_MJ * 1000))
    assert r.status_code == 200 and r.json()["accepted"], r.text
    assert _energy(runtime, node) == (0, 1000)
    assert runtime.live.report_counts(node.node_id) == (2, 0, 2)
    assert _post(client, node, _one_gpu(node, 3, 3000)).json()["accepted"]
    assert _energy(runtime, node) == (2000, 3000)


def test_an_energy_total_past_its_bound_is_refused_before_any_write(
    client: TestClient, runtime: Runtime, site: str
) -> None:
    """A counter that swings from 0 to its maximum and back (a 'reset' each time) adds its maximum
    each swing; a total no GPU can reach is refused whole, nothing of the report written."""
    node = register_node(runtime, 1)
    seq = 1
    assert _post(client, node, _one_gpu(node, seq, 0)).status_code == 200
    swings = MAX_ENERGY_TOTAL_MJ // MAX_ENERGY_MJ
    for _ in range(swings):
        for counter in (MAX_ENERGY_MJ, 0):
            seq += 1
            assert _post(client, node, _one_gpu(node, seq, counter)).status_code == 200
    assert _energy(runtime, node) == (swings * MAX_ENERGY_MJ, 0)
    before = _redis_state(runtime, node.node_id)
    r = _post(client, node, _one_gpu(node, seq + 1, MAX_ENERGY_MJ))
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, r.text
    assert _redis_state(runtime, node.node_id) == before


def test_a_seq_of_10_30_is_refused_and_the_node_keeps_reporting(
    client: TestClient, runtime: Runtime, site: str
) -> None:
    node = register_node(runtime, 1)
    assert _post(client, node, _body(node, 5)).json()["accepted"]
    before = _redis_state(runtime, node.node_id)
    r = _post(client, node, _body(node, 10**30))
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, r.text
    assert _redis_state(runtime, node.node_id) == before
    r = _post(client, node, _body(node, 6))
    assert r.json() == {"accepted": True, "duplicate": False, "generation": r.json()["generation"]}


def test_a_seq_far_ahead_is_refused_and_cannot_wedge_the_node(client: TestClient, runtime: Runtime, site: str) -> None:
    node = register_node(runtime, 1)
    assert _post(client, node, _body(node, 5)).json()["accepted"]
    before = _redis_state(runtime, node.node_id)
    r = _post(client, node, _body(node, 5 + 10_000_000))
    assert r.status_code == 409 and r.headers["content-type"] == PROBLEM, r.text
    assert "too far ahead" in r.json()["detail"]
    assert _redis_state(runtime, node.node_id) == before
    assert _post(client, node, _body(node, 6)).json()["accepted"]
    # A restarted agent skips the rest of its reserved block of seqs: that jump is no problem.
    assert _post(client, node, _body(node, 6 + 1000)).json()["accepted"]
    assert runtime.live.report_counts(node.node_id) == (3, 0, 1006)


def test_the_seq_jump_allowed_grows_with_the_node_s_silence(runtime: Runtime, site: str) -> None:
    """An agent whose reports were lost for a day (a spool on a full disk) gets back in."""
    node = register_node(runtime, 1)
    now = time.time()

    def send(seq: int, at: float) -> ingest.Ingested:
        report = ReportRequest.model_validate(_body(node, seq))
        return ingest.ingest_report(
            live=runtime.live,
            uow=runtime.uow,
            read=runtime.read,
            node_id=node.node_id,
            report=report,
            now=at,
            lease_ttl_s=15,
        )

    assert send(1, now).accepted
    far = 1 + SEQ_JUMP_ALLOWANCE + 86_400  # a day of reports, one a second, never delivered
    with pytest.raises(Exception, match="too far ahead"):
        send(far, now + 1)
    assert send(far, now + 86_400).accepted


@pytest.mark.parametrize("at", [1e20, math.nan, math.inf, -1.0])
def test_xid_times_out_of_bounds_are_refused_with_nothing_written(
    client: TestClient, runtime: Runtime, site: str, at: float
) -> None:
    node = register_node(runtime, 1)
    assert _post(client, node, _body(node, 1)).status_code == 200
    before = _redis_state(runtime, node.node_id)
    body = _body(node, 2, xid_events=[{"uuid": node.inventory.gpus[0].uuid, "xid": 79, "at": at}])
    r = _post(client, node, body)
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, r.text
    assert _redis_state(runtime, node.node_id) == before


BAD = [
    ("sent_at", math.nan),
    ("sent_at", 1e20),
    ("seq", -1),
    ("applied_generation", 2**64),
    ("protocol_version", 10**30),
    ("gpus.0.uuid", "GPU-\x00"),
    ("gpus.0.index", 2**40),
    ("gpus.0.xid_counts", {"13": 10**30}),
    ("gpus.0.processes", [{"pid": -1}]),
    ("assignments", [{"workload_id": "wl_\x00", "epoch": 1, "rank": 0, "phase": "running"}]),
    ("assignments", [{"workload_id": "wl_1", "epoch": 2**64, "rank": 0, "phase": "running"}]),
    ("assignments", [{"workload_id": "wl_1", "epoch": 1, "rank": 2**63, "phase": "running"}]),
    ("assignments", [{"workload_id": "wl_1", "epoch": 1, "rank": 0, "phase": "running", "started_at": 1e300}]),
    ("xid_events", [{"uuid": "GPU-rack-001-01-0", "xid": 2**63, "at": 1.0}]),
    ("agent_version", "1.0\u202e"),
]


@pytest.mark.parametrize(("field", "value"), BAD, ids=[f"{f}={str(v)[:24]!r}" for f, v in BAD])
def test_bad_fields_get_a_4xx_problem_and_change_nothing(
    client: TestClient, runtime: Runtime, site: str, field: str, value: object
) -> None:
    node = register_node(runtime, 1)
    assert _post(client, node, _body(node, 1)).status_code == 200
    before = _redis_state(runtime, node.node_id)
    body = _body(node, 2)
    head, _, rest = field.partition(".")
    if rest:
        index, _, name = rest.partition(".")
        body[head][int(index)][name] = value
    else:
        body[head] = value
    r = _post(client, node, body)
    assert 400 <= r.status_code < 500 and r.headers["content-type"] == PROBLEM, r.text
    assert _redis_state(runtime, node.node_id) == before


def test_control_and_bidi_characters_in_free_text_are_replaced_never_a_500(
    client: TestClient, runtime: Runtime, site: str
) -> None:
    ops = make_operator_key(runtime)
    node = register_node(runtime, 1)
    uuid = node.inventory.gpus[0].uuid
    # (A NUL is refused whole at the API's edge, with every other string of every body.)
    body = _body(node, 1, xid_events=[{"uuid": uuid, "xid": 13, "at": time.time(), "detail": "bad\x07 \u202eevil"}])
    body["gpus"][0].update(health="degraded", health_reasons=["XID 13\x1b[2J"])
    r = _post(client, node, body)
    assert r.status_code == 200, r.text
    gpu = _gpus_view(client, ops)[uuid]
    events = client.get(f"/v1/operator/gpus/{gpu['id']}/events", headers=ops).json()
    assert [e["detail"] for e in events if e["kind"] == "xid"] == ["bad\ufffd \ufffdevil"]
    assert gpu["health_reason"] == "XID 13\ufffd[2J"


# -- finding 5: nothing is marked seen before it is durable -----------------------------------------


@pytest.fixture
def refusing_gpu_events(runtime: Runtime) -> Iterator[None]:
    """The database itself refuses every new GPU event (a trigger), until the test lets it go."""
    postgres = runtime.engine.dialect.name == "postgresql"
    with runtime.engine.begin() as conn:
        if postgres:
            conn.execute(
                text(
                    "CREATE FUNCTION sy_refuse_gpu_events() RETURNS trigger AS $$ "
                    "BEGIN RAISE EXCEPTION 'gpu_events refuses writes'; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER sy_refuse_gpu_events BEFORE INSERT ON gpu_events "
                    "FOR EACH ROW EXECUTE FUNCTION sy_refuse_gpu_events()"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE TRIGGER sy_refuse_gpu_events BEFORE INSERT ON gpu_events "
                    "BEGIN SELECT RAISE(ABORT, 'gpu_events refuses writes'); END"
                )
            )
    try:
        yield
    finally:
        lift_refusal(runtime)


def lift_refusal(runtime: Runtime) -> None:
    with runtime.engine.begin() as conn:
        conn.execute(text("DROP TRIGGER IF EXISTS sy_refuse_gpu_events" + (" ON gpu_events" if _pg(runtime) else "")))
        if _pg(runtime):
            conn.execute(text("DROP FUNCTION IF EXISTS sy_refuse_gpu_events()"))


def _pg(runtime: Runtime) -> bool:
    return runtime.engine.dialect.name == "postgresql"


def test_a_report_whose_database_step_fails_is_not_lost(
    client: TestClient, runtime: Runtime, site: str, refusing_gpu_events: None
) -> None:
    ops = make_operator_key(runtime)
    node = register_node(runtime, 1)
    uuid = node.inventory.gpus[0].uuid
    assert _post(client, node, _body(node, 1)).json()["accepted"]  # no event: nothing to refuse
    before = _redis_state(runtime, node.node_id)
    body = _body(node, 2, xid_events=[{"uuid": uuid, "xid": 79, "at": time.time(), "detail": "fell off the bus"}])
    failed = _post(client, node, body)
    assert failed.status_code >= 500 and failed.headers["content-type"] == PROBLEM, failed.text
    after = _redis_state(runtime, node.node_id)
    assert {k: after[k] for k in ("seq", "gpus", "energy")} == {k: before[k] for k in ("seq", "gpus", "energy")}

    lift_refusal(runtime)
    retry = _post(client, node, body)  # the agent spooled it and sends it again
    assert retry.json() == {"accepted": True, "duplicate": False, "generation": retry.json()["generation"]}
    gpu = _gpus_view(client, ops)[uuid]
    events = client.get(f"/v1/operator/gpus/{gpu['id']}/events", headers=ops).json()
    assert [(e["kind"], e["xid"]) for e in events] == [("xid", 79)]
    assert gpu["energy_mj_total"] == 1000  # counted once, by the report that landed
    assert runtime.live.report_counts(node.node_id) == (2, 0, 2)


def test_a_report_folded_but_not_recorded_in_redis_is_retried_without_double_counting(
    client: TestClient, runtime: Runtime, site: str
) -> None:
    """SQL committed, then Redis failed before recording the report: the agent's retry folds it
    again, which adds nothing, and records it."""
    ops = make_operator_key(runtime)
    node = register_node(runtime, 1)
    uuid = node.inventory.gpus[0].uuid
    assert _post(client, node, _body(node, 1)).json()["accepted"]
    at = time.time()
    body = _body(node, 2, xid_events=[{"uuid": uuid, "xid": 79, "at": at}, {"uuid": uuid, "xid": 79, "at": at}])
    with runtime.uow() as session:  # what ingest did before Redis went away
        reports.apply_report(session, node_id=node.node_id, report=ReportRequest.model_validate(body))
    retry = _post(client, node, body)
    assert retry.json()["accepted"] is True and retry.json()["duplicate"] is False
    gpu = _gpus_view(client, ops)[uuid]
    events = client.get(f"/v1/operator/gpus/{gpu['id']}/events", headers=ops).json()
    assert [(e["kind"], e["xid"]) for e in events] == [("xid", 79), ("xid", 79)]  # both, each once
    assert gpu["energy_mj_total"] == 1000
    again = _post(client, node, body)
    assert again.json()["duplicate"] is True
