"""A pass's bulk writes (COPY on PostgreSQL, executemany INSERT on SQLite) store what an INSERT would.

The rows a scheduling pass writes through ``store.bulk.insert_rows`` must read back the same on
both databases (times as aware UTC, text with tabs, newlines and backslashes intact), and a
second live allocation of a GPU must fail as the ``IntegrityError`` the scheduler's loop catches,
leaving the transaction to roll back whole.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from factories import make_site, make_tenant, register_node, workload_body
from fastapi.testclient import TestClient
from sqlalchemy import Table, func, select
from sqlalchemy.exc import IntegrityError

from controlplane.domain.epoch import PlacementEpoch
from controlplane.runtime import Runtime
from controlplane.services.scheduler.run import run_pass
from controlplane.store.bulk import insert_rows
from controlplane.store.models import Allocation, WorkloadEvent


def _table(model: type[Allocation] | type[WorkloadEvent]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


@pytest.fixture
def placed(client: TestClient, runtime: Runtime) -> str:
    make_site(runtime)
    register_node(runtime, 1)
    tenant = make_tenant(runtime, "acme").headers
    workload_id: str = client.post("/v1/workloads", json=workload_body(4), headers=tenant).json()["id"]
    run_pass(runtime, PlacementEpoch(0, 3))
    return workload_id


def test_the_pass_wrote_its_allocations_in_bulk(runtime: Runtime, placed: str) -> None:
    with runtime.read() as session:
        allocations = session.scalars(select(Allocation).where(Allocation.workload_id == placed)).all()
    assert len(allocations) == 4
    assert {a.epoch for a in allocations} == {PlacementEpoch(0, 3).value}
    assert all(a.created_at.tzinfo is UTC and a.released_at is None for a in allocations)


def test_rows_read_back_as_written(runtime: Runtime, placed: str) -> None:
    at = datetime(2026, 12, 1, 23, 59, 58, 123456, tzinfo=UTC)
    awkward = "tab\there\nnew line \\N backslash, 'quote' \"double\" ünïcode"
    rows = [{"workload_id": placed, "from_state": None, "to_state": "running", "reason": awkward, "at": at}]
    with runtime.uow() as session:
        insert_rows(session, _table(WorkloadEvent), rows)
    with runtime.read() as session:
        event = session.scalars(
            select(WorkloadEvent).where(WorkloadEvent.workload_id == placed, WorkloadEvent.reason == awkward)
        ).one()
    assert (event.from_state, event.to_state, event.at) == (None, "running", at)


def test_a_second_live_owner_is_an_integrity_error_and_nothing_lands(runtime: Runtime, placed: str) -> None:
    with runtime.read() as session:
        taken = session.scalars(select(Allocation).where(Allocation.workload_id == placed)).first()
        assert taken is not None
        before = session.scalar(select(func.count()).select_from(Allocation))
    now = datetime.now(UTC)
    row = {"workload_id": placed, "node_id": taken.node_id, "rank": 0, "epoch": 9, "created_at": now}
    with pytest.raises(IntegrityError), runtime.uow() as session:
        insert_rows(session, _table(WorkloadEvent), [{"workload_id": placed, "to_state": "x", "reason": "", "at": now}])
        insert_rows(session, _table(Allocation), [{**row, "gpu_id": taken.gpu_id}])
    with runtime.read() as session:
        assert session.scalar(select(func.count()).select_from(Allocation)) == before
        assert session.scalar(select(func.count()).where(WorkloadEvent.to_state == "x")) == 0


def test_rows_must_name_the_same_columns(runtime: Runtime, placed: str) -> None:
    now = datetime.now(UTC)
    rows = [
        {"workload_id": placed, "to_state": "a", "reason": "", "at": now},
        {"workload_id": placed, "to_state": "b", "at": now},
    ]
    with pytest.raises(ValueError), runtime.uow() as session:
        insert_rows(session, _table(WorkloadEvent), rows)


def test_defaults_and_a_campus_of_nodes_in_one_generation_bump(runtime: Runtime) -> None:
    """12,001 nodes: more than SQLite takes in one statement's IN list, one array on PostgreSQL."""
    from controlplane.services.workloads.lifecycle import bump_generations
    from controlplane.store.models import Node

    site_id = make_site(runtime)
    ids = [f"node_{n:05d}" for n in range(12_001)]
    rows = [{"id": i, "site_id": site_id, "hostname": i, "address": "127.0.0.1", "backend": "sim"} for i in ids]
    with runtime.uow() as session:
        node_table = Node.__table__
        assert isinstance(node_table, Table)
        insert_rows(session, node_table, rows)
    with runtime.uow() as session:
        generations = bump_generations(session, ids)
    assert generations == dict.fromkeys(ids, 2)  # the Python-side default (1) was applied, then bumped
    with runtime.read() as session:
        node = session.get(Node, ids[-1])
        assert node is not None
        assert (node.status, node.cordoned, node.generation) == ("ready", False, 2)
        assert node.registered_at.tzinfo is UTC
