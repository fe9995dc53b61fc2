"""A page of any list costs a bounded number of SQL statements, whatever its size.

Regression: ``GET /v1/workloads?limit=50`` ran 1 + 2 x 50 statements (each workload's allocation
and ranks were loaded one workload at a time).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from factories import make_operator_key, make_site, make_tenant, register_node, workload_body
from fastapi.testclient import TestClient
from sqlalchemy import event

from controlplane.domain.epoch import PlacementEpoch
from controlplane.runtime import Runtime
from controlplane.services.scheduler.run import run_pass


class Statements:
    def __init__(self) -> None:
        self.count = 0


@contextmanager
def counting(runtime: Runtime) -> Iterator[Statements]:
    seen = Statements()

    def on_execute(*_: Any) -> None:
        seen.count += 1

    event.listen(runtime.engine, "before_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        event.remove(runtime.engine, "before_cursor_execute", on_execute)


def statements(client: TestClient, runtime: Runtime, path: str, headers: dict[str, str]) -> int:
    client.get(path, headers=headers)  # the key is now cached: only the page's own statements count
    with counting(runtime) as seen:
        r = client.get(path, headers=headers)
    assert r.status_code == 200, r.text
    return seen.count


def test_list_pages_cost_the_same_statements_for_one_row_or_fifty(client: TestClient, runtime: Runtime) -> None:
    make_site(runtime)
    register_node(runtime, 1)
    ops = make_operator_key(runtime)
    acme = make_tenant(runtime, "acme")
    r = client.post("/v1/workloads", json=workload_body(1, nvlink="none"), headers=acme.headers)
    assert r.status_code == 201
    run_pass(runtime, PlacementEpoch(1, 1))
    paths = {
        "tenant workloads": ("/v1/workloads?limit=50", acme.headers),
        "operator workloads": ("/v1/operator/workloads?limit=50", ops),
        "nodes": ("/v1/operator/nodes", ops),
        "gpus": ("/v1/operator/gpus", ops),
        "tenants": ("/v1/operator/tenants", ops),
        "preemptions": ("/v1/operator/preemptions", ops),
        "sites": ("/v1/operator/sites", ops),
        "racks": ("/v1/operator/racks", ops),
        "offerings": ("/v1/offerings", acme.headers),
        "keys": ("/v1/operator/keys?limit=50", ops),
        "own keys": ("/v1/keys?limit=50", acme.headers),
        "bootstrap tokens": ("/v1/operator/bootstrap-tokens?limit=50", ops),
        "audit log": ("/v1/operator/audit?limit=50", ops),
        "own audit": ("/v1/audit?limit=50", acme.headers),
    }
    small = {name: statements(client, runtime, p, h) for name, (p, h) in paths.items()}

    for i in range(2, 14):  # 13 trays, 52 GPUs
        register_node(runtime, i)
    for i in range(49):
        make_tenant(runtime, f"t{i}")
        r = client.post("/v1/workloads", json=workload_body(1, nvlink="none"), headers=acme.headers)
        assert r.status_code == 201
    run_pass(runtime, PlacementEpoch(1, 2))
    page = client.get("/v1/workloads?limit=50", headers=acme.headers).json()
    assert len(page["items"]) == 50 and all(w["allocation"] is not None for w in page["items"])
    large = {name: statements(client, runtime, p, h) for name, (p, h) in paths.items()}

    assert large == small, {name: (small[name], large[name]) for name in paths if small[name] != large[name]}
    assert large["tenant workloads"] <= 5, large
    assert max(large.values()) <= 6, large
