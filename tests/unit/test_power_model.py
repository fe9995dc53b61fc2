"""One planned-draw formula: the scheduler's budget, the mining budget, the operator's view and the
day replay compute the same watts for the same fleet, whatever rack ids and domains it has."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import benchmods
import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.dispatch.budget import mining_target_w
from controlplane.domain.errors import InvalidRequest
from controlplane.domain.site import SiteSpec
from controlplane.power.model import PowerModel, Tally, rack_key, site_tally, tally_by_rack
from controlplane.scenarios import sites_file
from controlplane.scheduling.index import Fleet
from controlplane.scheduling.power_budget import PowerBudget, node_rack, planned_gpu_grid_w, snapshot_tally
from controlplane.scheduling.snapshot import FleetSnapshot, GpuSlot, MiningBlock, NodeView

ROOT = Path(__file__).resolve().parents[2]
MODEL = PowerModel(
    site_cap_w=10e6, pue=1.25, gpu_idle_w=180, gpu_limit_w=1400, node_overhead_w=1100, switch_trays_w_per_rack=3600
)


def _node(name: str, *, rack: str | None, domain: str | None, allocated: int, gpus: int = 4) -> NodeView:
    slots = tuple(GpuSlot(f"{name}-g{i}", i, "NVIDIA GB300", True, i < allocated) for i in range(gpus))
    return NodeView(name, domain, "", slots, rack_id=rack)


def test_nodes_without_rack_ids_draw_the_same_in_every_view() -> None:
    """The defect: the core counted switch trays per NVLink domain while the operator view (and so
    mining's share) counted one set for the whole site; 13,550 W against 9,050 W for this fleet."""
    nodes = (
        _node("a", rack=None, domain="d1", allocated=4),
        _node("b", rack=None, domain="d2", allocated=0),
    )
    snap = FleetSnapshot(nodes, power=MODEL, mining=MiningBlock(power_w=0.0))
    budget = PowerBudget(snap, Fleet(snap).rack_names)
    it_w = 2 * 3600 + 2 * 1100 + 4 * 1400 + 4 * 180
    assert budget.it_w == pytest.approx(it_w)
    assert budget.site_planned_w == pytest.approx(it_w * 1.25)
    assert planned_gpu_grid_w(snap) == pytest.approx(it_w * 1.25)


@st.composite
def fleets(draw: st.DrawFn) -> FleetSnapshot:
    nodes = []
    for i in range(draw(st.integers(0, 24))):
        domain = draw(st.sampled_from([None, "d0", "d1", "d2"]))
        rack = draw(st.sampled_from([None, None, "r0", "r1"]))
        gpus = draw(st.integers(0, 4))
        nodes.append(_node(f"n{i}", rack=rack, domain=domain, allocated=draw(st.integers(0, gpus)), gpus=gpus))
    mining = draw(st.floats(0, 5e6))
    return FleetSnapshot(tuple(nodes), power=MODEL, mining=MiningBlock(power_w=mining))


@given(fleets(), st.integers(0, 16))
def test_every_view_of_planned_power_agrees(snap: FleetSnapshot, placed: int) -> None:
    assert snap.power is not None and snap.mining is not None
    budget = PowerBudget(snap, Fleet(snap).rack_names)
    gpu_w = planned_gpu_grid_w(snap)
    # The core's budget, the operator's view and the mining rebalance read the same draw ...
    assert budget.site_planned_w - snap.mining.power_w == pytest.approx(gpu_w)
    tallies = snapshot_tally(snap)
    assert sum(MODEL.it_w(t) for t in tallies.values()) == pytest.approx(budget.it_w)
    assert sum(budget.rack_draw) == pytest.approx(sum(MODEL.it_w(t) for k, t in tallies.items() if k is not None))
    # ... and a pass's placements move all of them by the same marginal watts.
    assert planned_gpu_grid_w(snap, placed) == pytest.approx(gpu_w + placed * MODEL.marginal_gpu_w * MODEL.pue)
    target = mining_target_w(MODEL, gpu_grid_w=planned_gpu_grid_w(snap, placed), fleet_full_w=5e6)
    assert 0 <= target <= 5e6
    assert target + planned_gpu_grid_w(snap, placed) <= MODEL.site_limit_w + 1e-6 or target == 0


@given(st.lists(st.integers(0, 4 * 18 * 4 - 1), max_size=80, unique=True))
def test_the_day_replay_counts_power_with_the_same_formula(taken: list[int]) -> None:
    rd = benchmods.load("replay_day")
    spec: dict[str, Any] = rd.scaled_site(rd.load_site(), 4)
    replay = rd.Replay(spec, [])
    gpus = sorted(replay.fleet.gpu_node)
    chosen = [gpus[i] for i in taken]
    replay.fleet.take("job", [(replay.fleet.node_ids[replay.fleet.gpu_node[g]], g) for g in chosen])
    snap = FleetSnapshot(replay.fleet.nodes(), power=replay.power, mining=MiningBlock(power_w=0.0))
    assert replay.gpu_planned_w() == pytest.approx(planned_gpu_grid_w(snap))
    assert replay._mining_target() == pytest.approx(
        mining_target_w(replay.power, gpu_grid_w=planned_gpu_grid_w(snap), fleet_full_w=replay.mining_max_w)
    )


def test_the_site_spec_is_parsed_once_with_every_default_in_one_place() -> None:
    import json

    sites = json.loads(sites_file().read_text())
    for name, raw in sites.items():
        spec = SiteSpec.parse(raw, name=name)
        model = PowerModel.for_site(spec)
        assert model.site_cap_w == raw["grid_capacity_mw"] * 1e6
        assert model.gpu_limit_w == raw["racks"]["gpu_power_limit_w"]
        assert spec.asics.full_w == raw["asics"].get("count", 0) * raw["asics"].get("power_w", 0)
    whole = site_tally({"r": Tally(racks=1, nodes=18, gpus=72, allocated=72)})
    assert PowerModel.for_site(SiteSpec.parse(sites["demo-rack"])).it_w(whole) == 3600 + 18 * 1100 + 72 * 1400


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"grid_capacity_mw": "lots"}, "grid_capacity_mw"),
        ({"pue": 0.5}, "pue"),
        ({"racks": {"count": 1}}, "racks.model"),
        ({"asics": {"count": -1}}, "asics.count"),
        ({"gird_capacity_mw": 1}, "gird_capacity_mw"),
    ],
)
def test_a_bad_site_spec_is_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    import json

    raw = json.loads(sites_file().read_text())["demo-rack"]
    raw.update(change)
    with pytest.raises(InvalidRequest) as caught:
        SiteSpec.parse(raw, name="demo-rack")
    assert field in caught.value.detail


@given(st.sampled_from([None, "r1"]), st.sampled_from([None, "d1"]))
def test_the_rack_rule_is_the_same_everywhere(rack: str | None, domain: str | None) -> None:
    node = _node("n", rack=rack, domain=domain, allocated=0)
    assert node_rack(node) == rack_key(rack, domain)
    assert list(tally_by_rack([node])) == [rack_key(rack, domain)]
