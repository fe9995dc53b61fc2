"""The operator's power view and the mining budget read the scheduler's own planned draw.

Regression: with nodes that carry no rack id (registered with a token for no rack, on NVLink
fabrics no rack of the site declares), the core budgeted one set of switch trays per NVLink
domain while the operator's view and the mining budget counted one set for the whole site:
mining could be handed power the scheduler never budgeted.
"""

from __future__ import annotations

from factories import (
    bootstrap_token,
    demo_spec,
    inventory,
    make_operator_key,
    make_tenant,
    workload_body,
)
from fastapi.testclient import TestClient

from agents.protocol import PROTOCOL_VERSION, RegisterRequest
from controlplane.domain.epoch import PlacementEpoch
from controlplane.runtime import Runtime
from controlplane.scheduling.index import Fleet
from controlplane.scheduling.power_budget import PowerBudget
from controlplane.services import admin
from controlplane.services.agents import registration
from controlplane.services.scheduler.build import build_snapshot
from controlplane.services.scheduler.run import run_pass
from controlplane.store.models import Node, Site


def _register_outside_any_rack(runtime: Runtime, index: int, fabric_rack: str) -> str:
    inv = inventory(index, rack=fabric_rack)  # a fabric the site's racks do not declare
    token = bootstrap_token(runtime, rack=None)
    request = RegisterRequest(protocol_version=PROTOCOL_VERSION, bootstrap_token=token, inventory=inv)
    with runtime.uow() as session:
        node, _ = registration.register(session, pepper=runtime.pepper, request=request)
        return node.id


def test_power_view_and_mining_budget_agree_with_the_core_for_nodes_without_racks(
    client: TestClient, runtime: Runtime
) -> None:
    asics = {"count": 100, "model": "S21", "efficiency_j_per_th": 17.5, "power_w": 3500, "min_power_w": 1200}
    with runtime.uow() as s:
        site_id = admin.create_site(s, name="demo-rack", spec=demo_spec(asics=asics)).id
    nodes = [_register_outside_any_rack(runtime, 1, "rack-901"), _register_outside_any_rack(runtime, 2, "rack-902")]
    with runtime.read() as s:
        rows = [s.get(Node, n) for n in nodes]
        assert all(row is not None and row.rack_id is None for row in rows)
    acme = make_tenant(runtime, "acme")
    r = client.post("/v1/workloads", json=workload_body(4), headers=acme.headers)
    assert r.status_code == 201, r.text
    run_pass(runtime, PlacementEpoch(1, 1))

    with runtime.read() as s:
        site = s.get(Site, site_id)
        assert site is not None
        snap = build_snapshot(s, site=site)
        mining_w = site.mining_planned_w
    budget = PowerBudget(snap, Fleet(snap).rack_names)
    core_gpu_w = budget.it_w * budget.model.pue
    # Two trays on two NVLink domains: two sets of switch trays, 4 GPUs at their limit, 4 idle.
    assert core_gpu_w == (2 * 3600 + 2 * 1100 + 4 * 1400 + 4 * 180) * 1.2

    view = client.get(f"/v1/operator/sites/{site_id}/power", headers=make_operator_key(runtime)).json()
    assert view["gpu_planned_w"] == core_gpu_w
    assert view["mining_planned_w"] == mining_w
    # Mining got what the core left under the limit, and not a watt more.
    assert mining_w == min(100 * 3500, view["limit_w"] - core_gpu_w)
    assert view["headroom_w"] == view["limit_w"] - core_gpu_w - mining_w
