"""Leases and deadlines, driven by an injected clock against the real Redis and database."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from factories import make_site, make_tenant, register_node, workload_body
from fastapi.testclient import TestClient

from controlplane.domain.epoch import PlacementEpoch
from controlplane.runtime import Runtime
from controlplane.services.scheduler.run import run_pass
from controlplane.services.workloads import deadlines
from controlplane.store.models import Node, Workload
from controlplane.store.types import utcnow
from controlplane.workers.tasks import sweep


@pytest.fixture
def site(runtime: Runtime) -> str:
    return make_site(runtime)


def test_expired_lease_marks_node_unreachable_then_requeues(client: TestClient, runtime: Runtime, site: str) -> None:
    settings = runtime.settings
    lost = register_node(runtime, 1)
    spare = register_node(runtime, 2)
    acme = make_tenant(runtime, "acme")
    now = time.time()
    runtime.live.renew_lease(node_id=lost.node_id, now=now, lease_ttl_s=settings.lease_ttl_s)
    runtime.live.renew_lease(node_id=spare.node_id, now=now + 1000, lease_ttl_s=settings.lease_ttl_s)
    wl_id = client.post("/v1/workloads", json=workload_body(4), headers=acme.headers).json()["id"]
    # Make the lost node the only place the workload fits.
    from controlplane.services.audit import SYSTEM
    from controlplane.services.fleet import cordon, gpus

    with runtime.uow() as s:
        cordon.cordon(s, SYSTEM, node_id=spare.node_id, reason="test")
    run_pass(runtime, PlacementEpoch(0, 1))

    # Within the lease nothing happens.
    assert sweep(runtime, now_s=now + settings.lease_ttl_s - 1).marked_unreachable == []
    result = sweep(runtime, now_s=now + settings.lease_ttl_s + 1)
    assert result.marked_unreachable == [lost.node_id]
    with runtime.sessions() as s:
        node = s.get_one(Node, lost.node_id)
        assert node.status == "unreachable" and "lease expired" in node.status_reason
        assert s.get_one(Workload, wl_id).state == "scheduled"  # the grace period protects the work
    # Sweeping again is idempotent.
    assert sweep(runtime, now_s=now + settings.lease_ttl_s + 2).marked_unreachable == []

    late = now + settings.lease_ttl_s + settings.unreachable_grace_s + 5
    result = sweep(runtime, now_s=late)
    assert result.requeued == [wl_id]
    with runtime.sessions() as s:
        wl = s.get_one(Workload, wl_id)
        assert wl.state == "pending" and "unreachable" in wl.reason
    # The GPUs of the lost node stay held until its agent confirms the process is gone.
    with runtime.sessions() as s:
        assert {g.state for g in gpus.gpu_states(s, node_ids=[lost.node_id])} == {"releasing"}

    # The agent comes back: a report makes the node ready again.
    from agents.protocol import PROTOCOL_VERSION

    r = client.post(
        f"/v1/agent/nodes/{lost.node_id}/reports",
        json={
            "protocol_version": PROTOCOL_VERSION,
            "seq": 1,
            "sent_at": time.time(),
            "gpus": [],
            "assignments": [],
            "applied_generation": 10_000,
        },
        headers=lost.headers,
    )
    assert r.status_code == 200, r.text
    with runtime.sessions() as s:
        assert s.get_one(Node, lost.node_id).status == "ready"
    with runtime.sessions() as s:
        assert {g.state for g in gpus.gpu_states(s, node_ids=[lost.node_id])} == {"free"}


def test_max_duration_is_enforced(client: TestClient, runtime: Runtime, site: str) -> None:
    register_node(runtime, 1)
    acme = make_tenant(runtime, "acme")
    wl_id = client.post("/v1/workloads", json=workload_body(4, max_duration_s=60), headers=acme.headers).json()["id"]
    run_pass(runtime, PlacementEpoch(0, 1))
    with runtime.uow() as s:
        assert deadlines.enforce_max_duration(s, now=utcnow() + timedelta(seconds=30)) == []
    with runtime.uow() as s:
        assert deadlines.enforce_max_duration(s, now=utcnow() + timedelta(seconds=61)) == [wl_id]
    with runtime.sessions() as s:
        wl = s.get_one(Workload, wl_id)
        assert wl.state == "failed" and "max duration of 60 s" in wl.reason
