"""A gang ends node by node: its state and its GPUs must agree at every report in between.

Each node's agent reports its rank's exit on its own cadence, so the ranks of a 16-GPU gang reach
the control plane up to a report interval apart. The GPUs of a rank that ended must not read
free while the workload still reads ``running``; the report that ends the workload frees them
all in the same transaction, and the workload's ``finished_at`` is that moment.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from factories import RegisteredNode, make_operator_key, make_site, make_tenant, register_node, workload_body
from fastapi.testclient import TestClient

from agents.protocol import PROTOCOL_VERSION
from controlplane.domain.epoch import PlacementEpoch
from controlplane.runtime import Runtime
from controlplane.services.scheduler.run import run_pass

EPOCH = 3
TERMINAL = ("succeeded", "failed", "cancelled", "preempted")


class Gang:
    """A placed 16-GPU workload and the agents of its four nodes, reporting through the API."""

    def __init__(self, client: TestClient, runtime: Runtime) -> None:
        make_site(runtime)
        nodes = [register_node(runtime, i) for i in range(1, 6)]
        self.client = client
        self.tenant = make_tenant(runtime, "acme").headers
        self.ops = make_operator_key(runtime)
        self.workload_id: str = client.post("/v1/workloads", json=workload_body(16), headers=self.tenant).json()["id"]
        run_pass(runtime, PlacementEpoch(0, EPOCH))
        self.ranks: list[dict[str, Any]] = self.workload()["allocation"]["ranks"]
        assert len(self.ranks) == 4
        by_id = {n.node_id: n for n in nodes}
        self.node_of = {r["rank"]: by_id[r["node_id"]] for r in self.ranks}
        self.seq = 0

    def workload(self) -> dict[str, Any]:
        body: dict[str, Any] = self.client.get(f"/v1/workloads/{self.workload_id}", headers=self.tenant).json()
        return body

    def gpu_states(self) -> dict[str, str]:
        """The state of each of the gang's GPUs, from the operator API."""
        uuids = {u for r in self.ranks for u in r["gpu_uuids"]}
        gpus = self.client.get("/v1/operator/gpus", headers=self.ops).json()
        return {g["uuid"]: g["state"] for g in gpus if g["uuid"] in uuids}

    def report(self, rank: int, phase: str, exit_code: int | None = None) -> None:
        node: RegisteredNode = self.node_of[rank]
        self.seq += 1
        desired = self.client.get(f"/v1/agent/nodes/{node.node_id}/desired", headers=node.headers).json()
        status: dict[str, Any] = {
            "workload_id": self.workload_id,
            "epoch": EPOCH,
            "rank": rank,
            "phase": phase,
            "exit_code": exit_code,
            "started_at": time.time() - 60,
        }
        if phase in ("exited", "stopped"):
            status["finished_at"] = time.time() - 30  # the agent's clock: when the process ended
        body = {
            "protocol_version": PROTOCOL_VERSION,
            "seq": self.seq,
            "sent_at": time.time(),
            "gpus": [{"uuid": g.uuid, "index": g.index, "power_w": 300.0} for g in node.inventory.gpus],
            "assignments": [status],
            "applied_generation": desired["generation"],
        }
        r = self.client.post(f"/v1/agent/nodes/{node.node_id}/reports", json=body, headers=node.headers)
        assert r.status_code == 200, r.text

    def assert_state_and_gpus_agree(self) -> str:
        """No GPU of the gang is free while the workload has not ended; returns the state."""
        states = self.gpu_states()
        state: str = self.workload()["state"]
        if state not in TERMINAL:
            assert set(states.values()) == {"allocated"}, (state, states)
        return state


@pytest.fixture
def gang(client: TestClient, runtime: Runtime) -> Gang:
    g = Gang(client, runtime)
    for rank in range(4):
        g.report(rank, "running")
    assert g.workload()["state"] == "running"
    return g


def test_ranks_that_exit_first_keep_their_gpus_until_the_gang_succeeds(gang: Gang) -> None:
    for rank in range(3):
        gang.report(rank, "exited", 0)
        assert gang.assert_state_and_gpus_agree() == "running"
    before = datetime.now(UTC)
    gang.report(3, "exited", 0)
    after = datetime.now(UTC)
    done = gang.workload()
    assert done["state"] == "succeeded" and done["allocation"]["released"] is True
    # The last report freed every GPU of the gang at once: those of the ranks that ended earlier too.
    assert set(gang.gpu_states().values()) == {"free"}
    # finished_at is the control plane's clock when it folded that report, not the agents' clock
    # (the ranks' processes ended 30 s earlier by theirs), and it is the terminal event's time.
    finished = datetime.fromisoformat(done["finished_at"])
    assert before <= finished <= after, (before, finished, after)
    terminal = [h for h in done["history"] if h["to_state"] == "succeeded"]
    assert len(terminal) == 1 and datetime.fromisoformat(terminal[0]["at"]) == finished
    assert [h["to_state"] for h in done["history"]][-2:] == ["running", "succeeded"]


def test_a_failing_rank_ends_the_gang_before_any_gpu_is_free(gang: Gang) -> None:
    gang.report(0, "exited", 0)
    assert gang.assert_state_and_gpus_agree() == "running"
    gang.report(1, "exited", 1)
    failed = gang.workload()
    assert failed["state"] == "failed" and "rank 1 exited with code 1" in failed["reason"]
    states = gang.gpu_states()
    by_rank = {r["rank"]: r["gpu_uuids"] for r in gang.ranks}
    # Ranks 0 and 1 are confirmed gone: free with the workload's end. Ranks 2 and 3 still run
    # until their agents stop them: held, releasing.
    assert {states[u] for rank in (0, 1) for u in by_rank[rank]} == {"free"}
    assert {states[u] for rank in (2, 3) for u in by_rank[rank]} == {"releasing"}
    for rank in (2, 3):
        gang.report(rank, "stopped")
    assert set(gang.gpu_states().values()) == {"free"}
    assert gang.workload()["state"] == "failed"
