"""Domain types in storage, on both databases: money exact to the digit, enumerated columns held
to their values by CHECK constraints, pending reasons with their codes, a migration that keeps
every row."""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest
from factories import make_operator_key, make_site, make_tenant, register_node, workload_body
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, StatementError

from controlplane.domain.epoch import PlacementEpoch
from controlplane.runtime import Runtime
from controlplane.services.scheduler.run import run_pass
from controlplane.store.db import make_engine
from controlplane.store.migrate import downgrade, upgrade
from controlplane.store.models import Tenant, Workload


def test_money_round_trips_exactly_and_a_float_never_gets_in(runtime: Runtime) -> None:
    acme = make_tenant(runtime, "acme")
    with runtime.uow() as s:
        tenant = s.get(Tenant, acme.tenant_id)
        assert tenant is not None
        assert tenant.price_usd_per_gpu_hour == Decimal("3.00")
        tenant.price_usd_per_gpu_hour = Decimal("3.199999")
        tenant.spend_cap_usd = Decimal("123456789012.345678")
    with runtime.read() as s:
        tenant = s.get(Tenant, acme.tenant_id)
        assert tenant is not None
        assert tenant.price_usd_per_gpu_hour == Decimal("3.199999")
        assert tenant.spend_cap_usd == Decimal("123456789012.345678")
    with pytest.raises(StatementError), runtime.uow() as s:
        tenant = s.get(Tenant, acme.tenant_id)
        assert tenant is not None
        tenant.spend_cap_usd = cast(Any, 0.1)  # the point: the column refuses a float
        s.flush()


def test_tenant_policy_money_over_the_api_is_exact_and_validated(client: TestClient, runtime: Runtime) -> None:
    ops = make_operator_key(runtime)
    acme = make_tenant(runtime, "acme")
    r = client.patch(
        f"/v1/operator/tenants/{acme.tenant_id}",
        json={"spend_cap_usd": "12.50", "price_usd_per_gpu_hour": 0.1},
        headers=ops,
    )
    assert r.status_code == 200, r.text
    assert r.json()["spend_cap_usd"] == "12.50" and r.json()["price_usd_per_gpu_hour"] == "0.10"
    quota = client.get("/v1/quota", headers=acme.headers).json()
    assert quota["spend_cap_usd"] == "12.50" and quota["spend_this_month_usd"] == "0.00"
    for bad in ("lots", "-1", "1e400", "0.0000001", None):
        r = client.patch(f"/v1/operator/tenants/{acme.tenant_id}", json={"price_usd_per_gpu_hour": bad}, headers=ops)
        if bad is None:  # null puts the default price back
            assert r.status_code == 200 and r.json()["price_usd_per_gpu_hour"] == "3.00", r.text
        else:
            assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
    with runtime.read() as s:
        tenant = s.get(Tenant, acme.tenant_id)
        assert tenant is not None and tenant.spend_cap_usd == Decimal("12.50")


@pytest.mark.parametrize(
    ("table", "column", "value"),
    [
        ("workloads", "state", "exploded"),
        ("workloads", "priority", "vip"),
        ("workloads", "nvlink", "sometimes"),
        ("workloads", "reason_code", "because"),
        ("tenants", "over_quota", "shrug"),
        ("nodes", "status", "gone fishing"),
        ("gpus", "health", "meh"),
        ("gpus", "health_action", "pray"),
        ("api_keys", "scope", "root"),
    ],
)
def test_enumerated_columns_refuse_values_outside_their_enum(
    runtime: Runtime, table: str, column: str, value: str
) -> None:
    make_site(runtime)
    node = register_node(runtime, 1)
    acme = make_tenant(runtime, "acme")
    from controlplane.domain.enums import NvlinkPolicy, PriorityClass
    from controlplane.domain.specs import WorkloadSpec
    from controlplane.services.workloads.submit import submit

    spec = WorkloadSpec(1, "NVIDIA GB300", NvlinkPolicy.NONE, PriorityClass.ON_DEMAND, ("true",))
    with runtime.uow() as s:
        submit(s, tenant_id=acme.tenant_id, spec=spec, idempotency_key=None, default_max_duration_s=60)
    keys = {"workloads": "tenant_id", "tenants": "id", "nodes": "id", "gpus": "node_id", "api_keys": "node_id"}
    owner = {"workloads": acme.tenant_id, "tenants": acme.tenant_id, "nodes": node.node_id}
    where = owner.get(table, node.node_id)
    with pytest.raises(IntegrityError), runtime.engine.begin() as conn:
        conn.execute(text(f"UPDATE {table} SET {column} = :v WHERE {keys[table]} = :k"), {"v": value, "k": where})


def test_pending_work_shows_its_reason_code(client: TestClient, runtime: Runtime) -> None:
    make_site(runtime)
    register_node(runtime, 1)
    acme = make_tenant(runtime, "acme")
    small = client.post("/v1/workloads", json=workload_body(2, nvlink="none"), headers=acme.headers).json()
    assert small["pending_reason_code"] == "submitted" and small["pending_reason"] == "waiting for the scheduler"
    run_pass(runtime, PlacementEpoch(1, 1))
    wl = client.post("/v1/workloads", json=workload_body(4), headers=acme.headers).json()
    run_pass(runtime, PlacementEpoch(1, 2))
    wl = client.get(f"/v1/workloads/{wl['id']}", headers=acme.headers).json()
    # Blocked by busy GPUs: it gets a planned start, and the reason still tells what is busy now.
    assert wl["state"] == "pending" and wl["pending_reason_code"] == "planned", wl
    assert wl["pending_reason"].startswith("planned start "), wl
    assert "; now waiting for 4 NVIDIA GB300 GPUs: 2/4 free (2 allocated)" in wl["pending_reason"], wl
    small = client.get(f"/v1/workloads/{small['id']}", headers=acme.headers).json()
    assert small["state"] == "scheduled" and small["pending_reason_code"] is None
    with runtime.read() as s:
        row = s.get(Workload, small["id"])
        assert row is not None and row.reason_code is None


def _fresh_url(db_url: str, tmp_path: Path) -> tuple[str, str | None]:
    if db_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'migrate.db'}", None
    from testenv import pg_database

    name = f"switchyard_migrate_{uuid.uuid4().hex[:8]}"
    return pg_database(name, drop=False), name


def test_the_domain_types_migration_keeps_every_row_and_goes_back(db_url: str, tmp_path: Path) -> None:
    url, pg_name = _fresh_url(db_url, tmp_path)
    try:
        upgrade(url, "0003")
        engine = make_engine(url)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO tenants (id, name, created_at, reserved_gpus, over_quota, price_usd_per_gpu_hour, "
                    "spend_cap_usd) VALUES ('t1', 'acme', '2026-11-30 00:00:00', 8, 'reject', 3.2, 1000.5)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO workloads (id, tenant_id, name, gpu_count, gpu_model, nvlink, priority, command, env, "
                    "max_duration_s, sim_utilization, state, reason, created_at, updated_at) VALUES ('w1', 't1', '', "
                    "4, 'NVIDIA GB300', 'required', 'on_demand', '[]', '{}', 60, 0.9, 'pending', 'waiting', "
                    "'2026-11-30 00:00:00', '2026-11-30 00:00:00')"
                )
            )
            conn.execute(text("UPDATE scheduler_fence SET epoch = 41 WHERE id = 1"))
        engine.dispose()
        upgrade(url)
        engine = make_engine(url)
        with engine.begin() as conn:
            price, cap, over = conn.execute(
                text("SELECT price_usd_per_gpu_hour, spend_cap_usd, over_quota FROM tenants")
            ).one()
            assert (Decimal(str(price)), Decimal(str(cap)), over) == (Decimal("3.2"), Decimal("1000.5"), "reject")
            assert conn.execute(text("SELECT state, reason_code FROM workloads")).one() == ("pending", "submitted")
            assert conn.execute(text("SELECT role, epoch FROM leader_fences")).one() == ("scheduler", 41)
        engine.dispose()
        downgrade(url, "0003")
        engine = make_engine(url)
        with engine.begin() as conn:
            assert conn.execute(text("SELECT epoch FROM scheduler_fence")).scalar() == 41
            assert float(conn.execute(text("SELECT price_usd_per_gpu_hour FROM tenants")).scalar_one()) == 3.2
            assert conn.execute(text("SELECT count(*) FROM workloads")).scalar() == 1
        engine.dispose()
        upgrade(url)
    finally:
        if pg_name is not None:
            from testenv import pg_database

            pg_database(pg_name, drop=True)
