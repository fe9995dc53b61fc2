"""A requeued workload placed again on the node whose agent is still stopping its old process.

The agent's report then carries two statuses of the same workload and rank, one per placement
(epoch). Regression: the fold keyed statuses by (workload, rank), so one hid the other: here the
new placement's "running" was lost behind the old one's "stopped", and the workload read
``scheduled`` while its process ran.
"""

from __future__ import annotations

import time
from typing import Any

from factories import RegisteredNode, make_site, make_tenant, register_node, workload_body
from fastapi.testclient import TestClient
from sqlalchemy import select

from agents.protocol import PROTOCOL_VERSION
from controlplane.domain.enums import UnreachablePolicy
from controlplane.domain.epoch import PlacementEpoch
from controlplane.runtime import Runtime
from controlplane.services.agents import liveness
from controlplane.services.scheduler.run import run_pass
from controlplane.store.models import Allocation


def _report(client: TestClient, node: RegisteredNode, seq: int, statuses: list[dict[str, Any]], applied: int) -> None:
    body = {
        "protocol_version": PROTOCOL_VERSION,
        "seq": seq,
        "sent_at": time.time(),
        "gpus": [],
        "assignments": statuses,
        "applied_generation": applied,
    }
    r = client.post(f"/v1/agent/nodes/{node.node_id}/reports", json=body, headers=node.headers)
    assert r.status_code == 200, r.text


def _status(wl: str, epoch: int, phase: str) -> dict[str, Any]:
    return {
        "workload_id": wl,
        "epoch": epoch,
        "rank": 0,
        "phase": phase,
        "exit_code": 0 if phase == "stopped" else None,
    }


def test_both_placements_of_a_requeued_workload_are_folded_from_one_report(
    client: TestClient, runtime: Runtime
) -> None:
    make_site(runtime)
    node = register_node(runtime, 1)
    acme = make_tenant(runtime, "acme")
    wl = client.post("/v1/workloads", json=workload_body(2, nvlink="none"), headers=acme.headers).json()["id"]
    run_pass(runtime, PlacementEpoch(1, 1))
    first = client.get(f"/v1/workloads/{wl}", headers=acme.headers).json()["allocation"]["epoch"]
    _report(client, node, 1, [_status(wl, first, "running")], applied=0)

    # The node goes silent past its grace: the workload is requeued; its old GPUs stay held.
    liveness.sweep(
        live=runtime.live, uow=runtime.uow, now_s=time.time() + 60, grace_s=0, policy=UnreachablePolicy.REQUEUE
    )
    assert client.get(f"/v1/workloads/{wl}", headers=acme.headers).json()["state"] == "pending"
    # The agent is back, its old process still stopping; the workload is placed again beside it.
    _report(client, node, 2, [_status(wl, first, "running")], applied=0)
    run_pass(runtime, PlacementEpoch(1, 2))
    again = client.get(f"/v1/workloads/{wl}", headers=acme.headers).json()
    second = again["allocation"]["epoch"]
    assert again["state"] == "scheduled" and second != first
    assert again["allocation"]["ranks"][0]["node_id"] == node.node_id

    # One report: the new placement's process runs, the old one is gone.
    _report(client, node, 3, [_status(wl, second, "running"), _status(wl, first, "stopped")], applied=10_000)
    now = client.get(f"/v1/workloads/{wl}", headers=acme.headers).json()
    assert now["state"] == "running", now["history"]
    with runtime.read() as s:
        held = (
            s.execute(select(Allocation.epoch).where(Allocation.workload_id == wl, Allocation.released_at.is_(None)))
            .scalars()
            .all()
        )
    assert sorted(set(held)) == [second]  # the old placement's GPUs are free, the new one's held
