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
        "priority": "on_demand",
        "gpu_model": "NVIDIA GB300",
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


def test_a_monthly_invoice_from_the_ledger_same_bytes_every_time(client: TestClient, runtime: Runtime) -> None:
    """January 2026 (long over: final): 2 on_demand GPU-hours and 1 spot GPU-hour booked, at the
    tenant's GPU-hour price; a row of February is not in it. The same bytes twice, and again after
    the hourly sums are rebuilt from the ledger alone; CSV too; bad months are problems."""
    from controlplane.metering.usage import UsageRow
    from controlplane.services.metering.record import Owner, book, rebuild_hourly

    make_site(runtime)
    acme = make_tenant(runtime, "acme")
    jan = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp()) * 1_000_000
    feb = int(datetime(2026, 2, 1, tzinfo=UTC).timestamp()) * 1_000_000

    def rows(n: int, start: int, hours: int) -> list[UsageRow]:
        return [
            UsageRow(f"u/{n}/g/{start + k * H}", n, "g", start + k * H, start + (k + 1) * H, H, KWH, KWH, False)
            for k in range(hours)
        ]

    od = Owner(acme.tenant_id, "wl-a", "on_demand", "NVIDIA GB300")
    spot = Owner(acme.tenant_id, "wl-s", "spot", "NVIDIA GB300")
    with runtime.uow() as s:
        assert book(s, [(od, rows(1, jan, 2)), (spot, rows(2, jan + 5 * H, 1)), (od, rows(3, feb, 1))]) == 4
        price = s.scalars(select(Tenant.price_usd_per_gpu_hour).where(Tenant.id == acme.tenant_id)).one()
    first = client.get("/v1/invoices/2026-01", headers=acme.headers)
    assert first.status_code == 200 and first.headers["content-type"].startswith("application/json"), first.text
    body = first.json()
    assert body["status"] == "final" and body["ledger_rows"] == 3
    assert Decimal(body["total"]) == (2 * price).quantize(Decimal("0.01")) + price.quantize(Decimal("0.01"))
    assert [(x["description"], x["quantity"]) for x in body["lines"]] == [
        ("NVIDIA GB300 GPU time, on_demand", "2.000000"),
        ("NVIDIA GB300 GPU time, spot", "1.000000"),
    ]
    assert client.get("/v1/invoices/2026-01", headers=acme.headers).content == first.content
    with runtime.uow() as s:
        rebuild_hourly(s)
    assert client.get("/v1/invoices/2026-01", headers=acme.headers).content == first.content
    csv_text = client.get("/v1/invoices/2026-01", params={"format": "csv"}, headers=acme.headers).text
    assert csv_text.splitlines()[-1].endswith(f",total,,,,,,{body['total']}")
    assert client.get("/v1/invoices/2099-01", headers=acme.headers).json()["status"] == "open"
    for month, params in (("2026-13", {}), ("26-01", {}), ("2026-01", {"format": "xml"})):
        r = client.get(f"/v1/invoices/{month}", params=params, headers=acme.headers)
        assert r.status_code in (400, 422) and r.headers["content-type"].startswith(PROBLEM), (month, r.text)
