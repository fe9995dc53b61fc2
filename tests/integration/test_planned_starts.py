"""Issue 10 in storage, on both databases: planned starts written by the commit, shown to the
tenant and read back into the next snapshot; claims, run bounds and preemption history in the
snapshot; fair-share weights over the operator API and CLI; declared checkpoint intervals.

Most decisions are built by hand (to pin each storage rule down) and committed through the
scheduler's own commit path; the last test runs the real core and shell pass after pass."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from factories import make_operator_key, make_site, make_tenant, register_node, workload_body
from fastapi.testclient import TestClient
from sqlalchemy import event, select, text
from sqlalchemy.exc import IntegrityError
from testenv import PEPPER, REDIS_URL

from controlplane.api.app import create_app
from controlplane.config import Settings
from controlplane.domain.enums import PriorityClass
from controlplane.domain.epoch import PlacementEpoch
from controlplane.domain.reasons import PendingCode
from controlplane.runtime import Runtime, build_runtime
from controlplane.scheduling.snapshot import (
    Placement,
    PlannedStart,
    PlanningRules,
    Preempt,
    RankPlacement,
    Unplaced,
)
from controlplane.services import admin
from controlplane.services.scheduler import build
from controlplane.services.scheduler.commit import commit
from controlplane.services.scheduler.run import keep_plans, run_pass
from controlplane.store.db import make_engine
from controlplane.store.migrate import downgrade, upgrade
from controlplane.store.models import Preemption, Tenant, Workload

PROBLEM = "application/problem+json"
EPOCH = PlacementEpoch(1, 1).value
T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def submit(client: TestClient, headers: dict[str, str], gpus: int, **kw: Any) -> str:
    r = client.post("/v1/workloads", json=workload_body(gpus, nvlink="none", **kw), headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def commit_decisions(runtime: Runtime, decisions: list[Any], *, epoch: int = EPOCH) -> None:
    with runtime.uow() as s:
        commit(s, decisions=decisions, epoch=epoch)


def planned(wl_id: str, start: datetime, domains: tuple[str, ...] = (), made: datetime | None = None) -> Unplaced:
    text_ = f"planned start at {start.isoformat()}: GPUs of its shape are held for it"
    made_at = made.timestamp() if made is not None else None
    return Unplaced(wl_id, text_, PendingCode.PLANNED, PlannedStart(start.timestamp(), domains, planned_at=made_at))


def row(runtime: Runtime, wl_id: str) -> Workload:
    with runtime.read() as s:
        wl = s.get(Workload, wl_id)
        assert wl is not None
        return wl


@contextmanager
def workload_updates(runtime: Runtime) -> Iterator[list[str]]:
    seen: list[str] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE WORKLOADS"):
            seen.append(statement)

    event.listen(runtime.engine, "before_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        event.remove(runtime.engine, "before_cursor_execute", on_execute)


def test_a_committed_plan_is_shown_to_the_tenant_and_comes_back_in_the_next_snapshot(
    client: TestClient, runtime: Runtime
) -> None:
    make_site(runtime)
    register_node(runtime, 1)
    acme = make_tenant(runtime, "acme")
    wl_id = submit(client, acme.headers, 4)
    domains = ("cluster-a.32766", "cluster-b.32766")
    commit_decisions(runtime, [planned(wl_id, T0, domains)])

    view = client.get(f"/v1/workloads/{wl_id}", headers=acme.headers).json()
    assert view["state"] == "pending" and view["pending_reason_code"] == "planned", view
    assert view["pending_reason"].startswith("planned start at 2026-12-02T12:00:00+00:00")
    assert datetime.fromisoformat(view["expected_start_at"]) == T0
    [listed] = client.get("/v1/workloads", headers=acme.headers).json()["items"]
    assert listed["expected_start_at"] == view["expected_start_at"]
    with runtime.read() as s:
        [request] = build.pending_queue(s)
    assert request.plan == PlannedStart(T0.timestamp(), domains, first_start_at=T0.timestamp())

    # A later plan moves the expected start; the first planned start stays what it was.
    later = T0 + timedelta(minutes=20)
    made = T0 - timedelta(hours=1)
    commit_decisions(runtime, [planned(wl_id, later, domains[:1], made)])
    with runtime.read() as s:
        [request] = build.pending_queue(s)
    assert request.plan == PlannedStart(
        later.timestamp(), domains[:1], first_start_at=T0.timestamp(), planned_at=made.timestamp()
    )  # when it was planned comes back too: planned work is decided in that order

    # Unplaced without a plan: no expected start, no held domains; the first start is kept.
    commit_decisions(runtime, [Unplaced(wl_id, "waiting for 4 GPUs", PendingCode.GPUS)])
    wl = row(runtime, wl_id)
    assert (wl.expected_start_at, wl.planned_domains, wl.first_expected_start_at) == (None, None, T0)
    view = client.get(f"/v1/workloads/{wl_id}", headers=acme.headers).json()
    assert view["expected_start_at"] is None and view["pending_reason_code"] == "gpus"
    with runtime.read() as s:
        [request] = build.pending_queue(s)
    assert request.plan is None

    # Planned again, then placed: the expected start is cleared, the first planned start kept.
    commit_decisions(runtime, [planned(wl_id, later, domains)])
    with runtime.read() as s:
        snap = build.build_snapshot(s)
    node = snap.nodes[0]
    placement = Placement(wl_id, (RankPlacement(node.node_id, tuple(g.gpu_id for g in node.gpus)),))
    commit_decisions(runtime, [placement])
    wl = row(runtime, wl_id)
    assert wl.state == "scheduled"
    assert (wl.expected_start_at, wl.planned_domains, wl.first_expected_start_at) == (None, None, T0)
    view = client.get(f"/v1/workloads/{wl_id}", headers=acme.headers).json()
    assert view["expected_start_at"] is None and view["pending_reason_code"] is None


def test_only_workloads_whose_reason_or_plan_changed_are_written(client: TestClient, runtime: Runtime) -> None:
    make_site(runtime)
    register_node(runtime, 1)
    acme = make_tenant(runtime, "acme")
    ids = [submit(client, acme.headers, 4) for _ in range(3)]
    first = [planned(ids[0], T0, ("d1",)), planned(ids[1], T0), Unplaced(ids[2], "waiting", PendingCode.GPUS)]
    with workload_updates(runtime) as seen:
        commit_decisions(runtime, first)
    assert len(seen) == 1  # one bulk statement for every changed row

    with workload_updates(runtime) as seen:
        commit_decisions(runtime, first)  # the same decisions again: nothing to write
    assert seen == []

    # One plan moves: one row written, the others untouched.
    moved = [planned(ids[0], T0, ("d1",)), planned(ids[1], T0 + timedelta(seconds=1)), first[2]]
    before = {w: row(runtime, w) for w in ids}
    with workload_updates(runtime) as seen:
        commit_decisions(runtime, moved)
    assert len(seen) == 1
    after = {w: row(runtime, w) for w in ids}
    assert after[ids[1]].expected_start_at == T0 + timedelta(seconds=1)
    assert after[ids[1]].first_expected_start_at == T0
    for w in (ids[0], ids[2]):
        assert (after[w].reason, after[w].expected_start_at, after[w].planned_domains) == (
            before[w].reason,
            before[w].expected_start_at,
            before[w].planned_domains,
        )
    assert after[ids[0]].planned_domains == '["d1"]' and after[ids[2]].planned_domains is None


def test_claims_run_bounds_and_preemption_history_read_back(client: TestClient, runtime: Runtime) -> None:
    make_site(runtime)
    for i in (1, 2):
        register_node(runtime, i)
    cheap, rich = make_tenant(runtime, "cheap"), make_tenant(runtime, "rich")
    ops = make_operator_key(runtime)
    r = client.patch(f"/v1/operator/tenants/{cheap.tenant_id}", json={"price_usd_per_gpu_hour": "3.20"}, headers=ops)
    assert r.status_code == 200, r.text
    victim = submit(client, cheap.headers, 4, priority="spot", max_duration_s=3600, checkpoint_interval_s=600)
    bystander = submit(client, cheap.headers, 4, priority="spot", max_duration_s=7200)
    run_pass(runtime, PlacementEpoch(1, 1))
    urgent = submit(client, rich.headers, 4, priority="on_demand")
    # An old preemption of the victim (released, two hours ago): counted, but not in the last hour.
    with runtime.uow() as s:
        s.add(
            Preemption(
                victim_id=victim,
                for_workload_id=urgent,
                victim_priority="spot",
                gpu_count=4,
                reason="an earlier notice",
                grace_s=30.0,
                noticed_at=datetime.now(UTC) - timedelta(hours=2),
                released_at=datetime.now(UTC) - timedelta(hours=2) + timedelta(seconds=20),
            )
        )
    noticed = datetime.now(UTC).replace(microsecond=0)
    with runtime.uow() as s:
        commit(
            s,
            decisions=[Preempt(victim, urgent, "making room for on-demand work", 30.0, 4)],
            epoch=PlacementEpoch(1, 2).value,
            now=noticed,
        )
    with runtime.read() as s:
        snap = build.build_snapshot(s, rules=PlanningRules(max_plans=5, min_run_s=120.0, notices_per_hour=1))
    running = {r.workload_id: r for r in snap.running}
    assert set(running) == {victim, bystander}
    v, b = running[victim], running[bystander]
    scheduled: dict[str, datetime] = {}
    for w in (victim, bystander):
        at = row(runtime, w).scheduled_at
        assert at is not None
        scheduled[w] = at
    assert v.preempting and v.claimed_for == urgent
    assert v.preemptions == 2 and v.noticed_at == (noticed.timestamp(),)
    assert v.ends_by == pytest.approx((scheduled[victim] + timedelta(seconds=3600)).timestamp())
    assert v.checkpoint_interval_s == 600.0 and v.price_usd_per_gpu_hour == Decimal("3.20")
    assert not b.preempting and b.claimed_for == "" and b.preemptions == 0 and b.noticed_at == ()
    assert b.ends_by == pytest.approx((scheduled[bystander] + timedelta(seconds=7200)).timestamp())
    assert b.checkpoint_interval_s is None and b.priority is PriorityClass.SPOT
    assert snap.rules == PlanningRules(max_plans=5, min_run_s=120.0, notices_per_hour=1)

    # Once the victim's GPUs are free, it is no longer running work and claims nothing.
    with runtime.uow() as s:
        s.execute(text("UPDATE allocations SET released_at = :t WHERE workload_id = :w"), {"t": noticed, "w": victim})
    with runtime.read() as s:
        snap = build.build_snapshot(s)
    assert {r.workload_id for r in snap.running} == {bystander}


def _snapshot_statements(runtime: Runtime) -> int:
    count = 0

    def on_execute(*_: Any) -> None:
        nonlocal count
        count += 1

    event.listen(runtime.engine, "before_cursor_execute", on_execute)
    try:
        with runtime.read() as s:
            build.pending_queue(s)
            build.build_snapshot(s)
    finally:
        event.remove(runtime.engine, "before_cursor_execute", on_execute)
    return count


def test_the_snapshot_costs_the_same_statements_for_one_workload_or_many(client: TestClient, runtime: Runtime) -> None:
    make_site(runtime)
    for i in range(1, 7):  # 24 GPUs
        register_node(runtime, i)
    acme, rich = make_tenant(runtime, "acme"), make_tenant(runtime, "rich")
    first = submit(client, acme.headers, 1, priority="spot", checkpoint_interval_s=60)
    run_pass(runtime, PlacementEpoch(1, 1))
    urgent = submit(client, rich.headers, 1)
    with runtime.uow() as s:
        commit(s, decisions=[Preempt(first, urgent, "room", 30.0, 1)], epoch=PlacementEpoch(1, 2).value)
    commit_decisions(runtime, [planned(urgent, T0, ("d",))], epoch=PlacementEpoch(1, 3).value)
    small = _snapshot_statements(runtime)

    spot = [submit(client, acme.headers, 1, priority="spot", checkpoint_interval_s=60) for _ in range(12)]
    run_pass(runtime, PlacementEpoch(1, 4))
    waiting = [submit(client, rich.headers, 1) for _ in range(12)]
    decisions: list[Any] = [Preempt(v, w, "room", 30.0, 1) for v, w in zip(spot, waiting, strict=True)]
    with runtime.uow() as s:
        commit(s, decisions=decisions, epoch=PlacementEpoch(1, 5).value)
    commit_decisions(runtime, [planned(w, T0, ("d",)) for w in waiting], epoch=PlacementEpoch(1, 6).value)
    with runtime.read() as s:
        snap = build.build_snapshot(s)
        queue = build.pending_queue(s)
    # The first victim still frees its GPU for the first preemptor (placed since, elsewhere).
    assert sum(r.claimed_for != "" for r in snap.running) == 13 and len(snap.running) == 14
    assert sum(q.plan is not None for q in queue) == 12 and len(queue) == 12
    assert _snapshot_statements(runtime) == small


def test_share_weight_is_set_shown_and_bounded_over_the_api(client: TestClient, runtime: Runtime) -> None:
    make_site(runtime)
    acme = make_tenant(runtime, "acme")
    ops = make_operator_key(runtime)
    url = f"/v1/operator/tenants/{acme.tenant_id}"
    [listed] = client.get("/v1/operator/tenants", headers=ops).json()
    assert listed["share_weight"] == 1.0
    r = client.patch(url, json={"share_weight": 2.5}, headers=ops)
    assert r.status_code == 200 and r.json()["share_weight"] == 2.5, r.text
    [listed] = client.get("/v1/operator/tenants", headers=ops).json()
    assert listed["share_weight"] == 2.5
    assert client.get("/v1/quota", headers=acme.headers).json()["share_weight"] == 2.5  # the tenant sees it
    with runtime.read() as s:
        snap = build.build_snapshot(s)
    assert snap.tenants[acme.tenant_id].share_weight == 2.5
    for bad in (0, -1, 0.001, 1000.5, 1e300, "lots", "2", "Infinity", True, [2]):
        r = client.patch(url, json={"share_weight": bad}, headers=ops)
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, (bad, r.text)
        assert "share_weight" in r.json()["detail"], r.text
    r = client.patch(url, content=b'{"share_weight": NaN}', headers={**ops, "Content-Type": "application/json"})
    assert r.status_code in (400, 422) and r.headers["content-type"] == PROBLEM, r.text
    assert client.get("/v1/operator/tenants", headers=ops).json()[0]["share_weight"] == 2.5
    for edge in (0.01, 1000):
        r = client.patch(url, json={"share_weight": edge}, headers=ops)
        assert r.status_code == 200 and r.json()["share_weight"] == edge, r.text
    r = client.patch(url, json={"share_weight": None}, headers=ops)  # null puts the default back
    assert r.status_code == 200 and r.json()["share_weight"] == 1.0, r.text
    audit = client.get("/v1/operator/audit?action=tenant.policy_changed", headers=ops).json()["items"]
    assert {"share_weight": None} in [e["detail"]["changes"] for e in audit]


@pytest.mark.parametrize(
    ("table", "column", "value"),
    [
        ("tenants", "share_weight", 0),
        ("tenants", "share_weight", -2),
        ("workloads", "checkpoint_interval_s", 59),
        ("workloads", "checkpoint_interval_s", 7 * 24 * 3600 + 1),
        ("workloads", "reason_code", "plannedish"),
    ],
)
def test_the_database_refuses_values_out_of_bounds(
    client: TestClient, runtime: Runtime, table: str, column: str, value: object
) -> None:
    make_site(runtime)
    register_node(runtime, 1)
    acme = make_tenant(runtime, "acme")
    submit(client, acme.headers, 1)
    with runtime.engine.begin() as conn:  # what the new CHECK takes
        conn.execute(text("UPDATE workloads SET reason_code = 'planned'"))
    with pytest.raises(IntegrityError), runtime.engine.begin() as conn:
        conn.execute(text(f"UPDATE {table} SET {column} = :v"), {"v": value})


def test_checkpoint_interval_is_accepted_within_bounds_and_refused_outside(
    client: TestClient, runtime: Runtime, settings: Settings
) -> None:
    make_site(runtime)
    register_node(runtime, 1)
    acme = make_tenant(runtime, "acme")
    ok = client.post(
        "/v1/workloads", json=workload_body(1, max_duration_s=3600, checkpoint_interval_s=600), headers=acme.headers
    )
    assert ok.status_code == 201 and ok.json()["checkpoint_interval_s"] == 600, ok.text
    assert row(runtime, ok.json()["id"]).checkpoint_interval_s == 600
    # Without a max duration the site's default bounds it (here a week, the interval's own bound).
    assert settings.default_max_duration_s == 7 * 24 * 3600
    week = client.post("/v1/workloads", json=workload_body(1, checkpoint_interval_s=604800), headers=acme.headers)
    assert week.status_code == 201, week.text
    plain = client.post("/v1/workloads", json=workload_body(1), headers=acme.headers).json()
    assert plain["checkpoint_interval_s"] is None
    cases: list[tuple[dict[str, object], str]] = [
        ({"checkpoint_interval_s": 59}, "checkpoint_interval_s"),
        ({"checkpoint_interval_s": 604801}, "checkpoint_interval_s"),
        ({"checkpoint_interval_s": "600"}, "checkpoint_interval_s"),
        ({"checkpoint_interval_s": 600.5}, "checkpoint_interval_s"),
        ({"checkpoint_interval_s": True}, "checkpoint_interval_s"),
        ({"checkpoint_interval_s": 3601, "max_duration_s": 3600}, "above the workload's max duration (3600 s)"),
    ]
    for bad, fragment in cases:
        r = client.post("/v1/workloads", json=workload_body(1, **bad), headers=acme.headers)
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, (bad, r.text)
        assert fragment in r.json()["detail"], r.text
    assert len(client.get("/v1/workloads", headers=acme.headers).json()["items"]) == 3


def test_checkpoint_interval_is_bounded_by_the_default_max_duration(
    db_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=db_url,
        redis_url=REDIS_URL,
        redis_prefix=redis_prefix,
        pepper=PEPPER,
        data_dir=tmp_path,
        default_max_duration_s=1800,
    )
    runtime = build_runtime(settings)
    try:
        with TestClient(create_app(settings, runtime=runtime), raise_server_exceptions=False) as client:
            make_site(runtime)
            register_node(runtime, 1)
            acme = make_tenant(runtime, "acme")
            r = client.post("/v1/workloads", json=workload_body(1, checkpoint_interval_s=3600), headers=acme.headers)
            assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, r.text
            assert "above the workload's max duration (1800 s)" in r.json()["detail"]
            r = client.post("/v1/workloads", json=workload_body(1, checkpoint_interval_s=1800), headers=acme.headers)
            assert r.status_code == 201, r.text
    finally:
        runtime.close()


def cli(db_url: str, tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SWITCHYARD_DATA_DIR": str(tmp_path / "data"),
        "SWITCHYARD_DATABASE_URL": db_url,
        "SWITCHYARD_PEPPER": PEPPER,
    }
    return subprocess.run(
        [sys.executable, "-m", "controlplane.cli", *argv], env=env, capture_output=True, text=True, timeout=60
    )


def test_share_weight_is_set_shown_and_bounded_by_the_cli(db_url: str, tmp_path: Path) -> None:
    assert cli(db_url, tmp_path, "admin", "create-tenant", "acme").returncode == 0
    shown = cli(db_url, tmp_path, "admin", "show-tenant", "acme")
    assert shown.returncode == 0 and json.loads(shown.stdout)["share_weight"] == 1.0, shown.stderr
    ok = cli(db_url, tmp_path, "admin", "set-policy", "acme", "--share-weight", "2.5")
    assert ok.returncode == 0 and "share_weight=2.5" in ok.stdout, ok.stderr
    shown = cli(db_url, tmp_path, "admin", "show-tenant", "acme")
    assert json.loads(shown.stdout)["share_weight"] == 2.5
    for bad in ("0", "-1", "1001", "nan", "inf"):
        r = cli(db_url, tmp_path, "admin", "set-policy", "acme", "--share-weight", bad)
        assert r.returncode == 2, (bad, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "share_weight must be 0.01 to 1000" in lines[0], r.stderr
    r = cli(db_url, tmp_path, "admin", "set-policy", "acme", "--share-weight", "heavy")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--share-weight" in r.stderr, r.stderr
    assert json.loads(cli(db_url, tmp_path, "admin", "show-tenant", "acme").stdout)["share_weight"] == 2.5


def _fresh_url(db_url: str, tmp_path: Path) -> tuple[str, str | None]:
    if db_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'migrate.db'}", None
    from testenv import pg_database

    name = f"switchyard_migrate_{uuid.uuid4().hex[:8]}"
    return pg_database(name, drop=False), name


def test_the_planned_starts_migration_keeps_every_row_and_goes_back(db_url: str, tmp_path: Path) -> None:
    url, pg_name = _fresh_url(db_url, tmp_path)
    try:
        upgrade(url, "0006")
        engine = make_engine(url)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO tenants (id, name, created_at, reserved_gpus, over_quota, price_usd_per_gpu_hour) "
                    "VALUES ('t1', 'acme', '2026-12-01 00:00:00', 8, 'hold', '3.20')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO workloads (id, tenant_id, name, gpu_count, gpu_model, nvlink, priority, command, env, "
                    "max_duration_s, sim_utilization, state, reason, reason_code, created_at, updated_at) VALUES "
                    "('w1', 't1', '', 72, 'NVIDIA GB300', 'required', 'on_demand', '[]', '{}', 3600, 0.9, "
                    "'pending', 'waiting for 72 GPUs', 'gpus', '2026-12-01 00:00:00', '2026-12-01 00:00:00')"
                )
            )
        engine.dispose()
        upgrade(url)
        engine = make_engine(url)
        with engine.begin() as conn:
            assert conn.execute(text("SELECT share_weight FROM tenants")).scalar_one() == 1.0
            assert conn.execute(
                text(
                    "SELECT reason_code, expected_start_at, first_expected_start_at, planned_domains, "
                    "checkpoint_interval_s FROM workloads"
                )
            ).one() == ("gpus", None, None, None, None)
            conn.execute(
                text(
                    "UPDATE workloads SET reason_code = 'planned', expected_start_at = '2026-12-02 12:00:00', "
                    "first_expected_start_at = '2026-12-02 11:00:00', planned_domains = '[\"c.1\"]', "
                    "checkpoint_interval_s = 600"
                )
            )
            conn.execute(text("UPDATE tenants SET share_weight = 3"))
        engine.dispose()
        downgrade(url, "0006")
        engine = make_engine(url)
        with engine.begin() as conn:
            # The older schema has no "planned": the workload says it waits for GPUs, and is kept.
            assert conn.execute(text("SELECT id, state, reason_code FROM workloads")).one() == (
                "w1",
                "pending",
                "gpus",
            )
            columns = conn.execute(text("SELECT * FROM workloads")).keys()
            assert "expected_start_at" not in columns and "checkpoint_interval_s" not in columns
            assert "share_weight" not in list(conn.execute(text("SELECT * FROM tenants")).keys())
            with pytest.raises(IntegrityError), conn.begin_nested():
                conn.execute(text("UPDATE workloads SET reason_code = 'planned'"))
        engine.dispose()
        upgrade(url)
        engine = make_engine(url)
        with engine.begin() as conn:
            assert conn.execute(text("SELECT share_weight FROM tenants")).scalar_one() == 1.0
            conn.execute(text("UPDATE workloads SET reason_code = 'planned'"))
        engine.dispose()
    finally:
        if pg_name is not None:
            from testenv import pg_database

            pg_database(pg_name, drop=True)


def test_the_schema_and_the_snapshot_agree_on_a_fresh_tenant(runtime: Runtime) -> None:
    acme = make_tenant(runtime, "acme")
    with runtime.read() as s:
        tenant = s.scalars(select(Tenant)).one()
        policy = build.tenant_policy(tenant, Decimal(0))
    assert tenant.id == acme.tenant_id and tenant.share_weight == 1.0 and policy.share_weight == 1.0
    with runtime.uow() as s:
        admin.update_tenant_policy(s, tenant_id="acme", changes={"share_weight": 4})
    with runtime.read() as s:
        assert build.tenant_policy(s.scalars(select(Tenant)).one(), Decimal(0)).share_weight == 4.0


def test_a_later_site_of_the_pass_does_not_undo_an_earlier_sites_plan() -> None:
    plan = planned("wl_a", T0, ("site-a-domain",))
    elsewhere = Unplaced("wl_a", "no NVIDIA GB300 at this site", PendingCode.NO_SUCH_MODEL)
    other = Unplaced("wl_b", "waiting for 8 GPUs", PendingCode.GPUS)
    placed_b = Placement("wl_b", (RankPlacement("node_1", ("gpu_1",)),))
    assert keep_plans([plan, other], set()) == [plan, other]
    # The earlier site planned wl_a: the later site's Unplaced for it goes, its other decisions stay.
    assert keep_plans([elsewhere, other, placed_b], {"wl_a"}) == [other, placed_b]
    # A later site may still place planned work (the placement clears the plan).
    placed_a = Placement("wl_a", (RankPlacement("node_2", ("gpu_2",)),))
    assert keep_plans([placed_a], {"wl_a"}) == [placed_a]


def test_leaving_pending_clears_the_plan_and_keeps_the_first(client: TestClient, runtime: Runtime) -> None:
    make_site(runtime)
    register_node(runtime, 1)
    acme = make_tenant(runtime, "acme")
    wl_id = submit(client, acme.headers, 4)
    commit_decisions(runtime, [planned(wl_id, T0, ("d",))])
    r = client.post(f"/v1/workloads/{wl_id}/cancel", headers=acme.headers)
    assert r.status_code == 200 and r.json()["expected_start_at"] is None, r.text
    wl = row(runtime, wl_id)
    assert (wl.state, wl.expected_start_at, wl.planned_domains, wl.first_expected_start_at) == (
        "cancelled",
        None,
        None,
        T0,
    )


def test_a_real_pass_plans_a_blocked_gang_backfills_only_what_ends_before_it_and_keeps_the_plan(
    client: TestClient, runtime: Runtime
) -> None:
    """The core and the shell together: a planned start made by the real core is stored, shown,
    read back and kept; a later request that would delay it waits; one that ends in time starts."""
    make_site(runtime)
    for i in (1, 2):
        register_node(runtime, i)  # one NVLink domain of 8 GPUs
    # One tenant: fair share orders its work by age (another tenant's 4 GPUs would go first).
    acme = make_tenant(runtime, "acme")
    running = submit(client, acme.headers, 4, max_duration_s=3600)
    run_pass(runtime, PlacementEpoch(1, 1))
    assert row(runtime, running).state == "scheduled"
    gang = submit(client, acme.headers, 8, max_duration_s=7200)
    longer = submit(client, acme.headers, 4, max_duration_s=7200)
    run_pass(runtime, PlacementEpoch(1, 2))
    view = client.get(f"/v1/workloads/{gang}", headers=acme.headers).json()
    assert view["pending_reason_code"] == "planned", view
    scheduled = row(runtime, running).scheduled_at
    assert scheduled is not None
    expected = datetime.fromisoformat(view["expected_start_at"])
    assert abs((expected - (scheduled + timedelta(seconds=3600))).total_seconds()) < 1
    assert "planned start" in view["pending_reason"] and "4 held now" in view["pending_reason"]
    # The 4 free GPUs are held: work that would still run at the planned start waits for them.
    assert row(runtime, longer).state == "pending"
    short = submit(client, acme.headers, 4, max_duration_s=1800)
    run_pass(runtime, PlacementEpoch(1, 3))
    assert row(runtime, short).state == "scheduled"  # ends before the gang can start: backfilled
    assert row(runtime, longer).state == "pending"
    again = client.get(f"/v1/workloads/{gang}", headers=acme.headers).json()
    assert again["expected_start_at"] == view["expected_start_at"]  # kept across passes
    with runtime.read() as s:
        plans = {r.workload_id: r.plan for r in build.pending_queue(s)}
    kept = plans[gang]
    assert kept is not None and kept.planned_at is not None and kept.first_start_at == expected.timestamp()
