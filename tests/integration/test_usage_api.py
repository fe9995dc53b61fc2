"""GET /v1/usage: a tenant's metered usage from the usage ledger, by day or by workload, its own
only, and bad queries refused with a problem (PostgreSQL and SQLite)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from badinput import PROBLEM
from factories import make_site, make_tenant
from fastapi.testclient import TestClient
from sqlalchemy import select

from controlplane.runtime import Runtime
from controlplane.store.bulk import insert_ignoring, table_of
from controlplane.store.models import Tenant, UsageRecord

H = 3_600_000_000  # microseconds in an hour
KWH = 3_600_000_000  # millijoules in a kWh


def _day_us(day: int) -> int:
    return int(datetime(2026, 12, day, tzinfo=UTC).timestamp()) * 1_000_000


def _row(n: int, tenant: str, workload: str, start_us: int, gpu_us: int, it_kwh: int) -> dict[str, Any]:
    return {
        "key": f"u/{n}/gpu-{n}/{start_us}",
        "tenant_id": tenant,
        "workload_id": workload,
        "allocation_id": n,
        "gpu_id": f"gpu-{n}",
        "start_us": start_us,
        "end_us": start_us + gpu_us,
        "gpu_us": gpu_us,
        "it_mj": it_kwh * KWH,
        "facility_mj": it_kwh * KWH * 5 // 4,
        "estimated": n == 3,
    }


def test_a_tenant_reads_its_own_usage_by_day_and_by_workload(client: TestClient, runtime: Runtime) -> None:
    make_site(runtime)
    acme, rival = make_tenant(runtime, "acme"), make_tenant(runtime, "rival")
    with runtime.uow() as s:
        insert_ignoring(
            s,
            table_of(UsageRecord),
            [
                _row(1, acme.tenant_id, "wl-a", _day_us(1), H, 2),
                _row(2, acme.tenant_id, "wl-b", _day_us(1) + 2 * H, H // 2, 1),
                _row(3, acme.tenant_id, "wl-a", _day_us(2) + 5 * H, 3 * H, 4),
                _row(4, acme.tenant_id, "wl-a", _day_us(3), H, 1),  # outside [Dec 1, Dec 3)
                _row(5, rival.tenant_id, "wl-r", _day_us(1), 7 * H, 9),
            ],
            ["key"],
        )
        price = s.scalars(select(Tenant.price_usd_per_gpu_hour).where(Tenant.id == acme.tenant_id)).one()
    headers = acme.headers
    r = client.get("/v1/usage", params={"from": "2026-12-01", "to": "2026-12-03"}, headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    got = [
        (x["group"], Decimal(x["gpu_hours"]), Decimal(x["kwh_facility"]), x["estimated_rows"]) for x in body["lines"]
    ]
    assert got == [("2026-12-01", Decimal("1.5"), Decimal("3.75"), 0), ("2026-12-02", Decimal(3), Decimal(5), 1)]
    assert Decimal(body["total_usd"]) == (Decimal("1.5") * price).quantize(Decimal("0.01")) + (3 * price).quantize(
        Decimal("0.01")
    )
    r = client.get("/v1/usage", params={"from": "2026-12-01", "to": "2026-12-03", "by": "workload"}, headers=headers)
    assert [(x["group"], Decimal(x["gpu_hours"])) for x in r.json()["lines"]] == [("wl-a", 4), ("wl-b", Decimal("0.5"))]
    other = client.get(
        "/v1/usage",
        params={"from": "2026-12-01", "to": "2026-12-04"},
        headers=rival.headers,
    )
    assert [x["group"] for x in other.json()["lines"]] == ["2026-12-01"] and Decimal(
        other.json()["total_gpu_hours"]
    ) == 7


def test_bad_usage_queries_get_a_problem(client: TestClient, runtime: Runtime) -> None:
    make_site(runtime)
    acme = make_tenant(runtime, "acme")
    headers = acme.headers
    for params in (
        {"from": "2026-12-03", "to": "2026-12-01"},
        {"from": "2026-12-01", "to": "2026-12-01"},
        {"from": "2025-01-01", "to": "2026-12-01"},
        {"from": "yesterday", "to": "2026-12-01"},
        {"from": "2026-12-01", "to": "2026-12-02", "by": "tenant"},
        {"to": "2026-12-02"},
    ):
        r = client.get("/v1/usage", params=params, headers=headers)
        assert r.status_code in (400, 422) and r.headers["content-type"].startswith(PROBLEM), (params, r.text)
    assert client.get("/v1/usage", params={"from": "2026-12-01", "to": "2026-12-02"}).status_code == 401
