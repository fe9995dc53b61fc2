"""The placement core with plain objects: gang, model, NVLink domain, health, cordons, packing."""

from __future__ import annotations

from controlplane.domain.enums import NvlinkPolicy, PriorityClass
from controlplane.scheduling.core import place, queue_order
from controlplane.scheduling.snapshot import (
    FleetSnapshot,
    GpuSlot,
    NodeView,
    Placement,
    TenantPolicy,
    Unplaced,
    WorkloadRequest,
)

GB300 = "NVIDIA GB300"


def node(
    name: str,
    domain: str | None = "d1",
    *,
    free: int = 4,
    total: int = 4,
    unschedulable: str = "",
    unhealthy: int = 0,
    model: str = GB300,
) -> NodeView:
    gpus = tuple(
        GpuSlot(gpu_id=f"{name}-g{i}", index=i, model=model, healthy=i >= unhealthy, allocated=i >= free)
        for i in range(total)
    )
    return NodeView(node_id=name, domain=domain, unschedulable=unschedulable, gpus=gpus)


def request(
    wid: str,
    gpus: int,
    nvlink: NvlinkPolicy = NvlinkPolicy.REQUIRED,
    *,
    at: float = 0.0,
    priority: PriorityClass = PriorityClass.ON_DEMAND,
    model: str = GB300,
) -> WorkloadRequest:
    return WorkloadRequest(
        workload_id=wid, gpu_count=gpus, gpu_model=model, nvlink=nvlink, priority=priority, submitted_at=at
    )


def gpus_of(decision: Placement | Unplaced) -> list[str]:
    assert isinstance(decision, Placement), decision
    return [g for r in decision.ranks for g in r.gpu_ids]


def test_small_gang_goes_to_one_node_best_fit() -> None:
    fleet = FleetSnapshot((node("a", free=4), node("b", free=2)))
    [d] = place(fleet, [request("w", 2)])
    assert isinstance(d, Placement) and [r.node_id for r in d.ranks] == ["b"]  # keeps node a whole


def test_gang_is_all_or_nothing() -> None:
    fleet = FleetSnapshot((node("a", free=3), node("b", free=3, domain="d2")))
    [d] = place(fleet, [request("w", 4)])
    assert isinstance(d, Unplaced)
    assert "one NVLink domain" in d.reason and "at most 3" in d.reason


def test_nvlink_required_stays_in_one_domain_and_none_may_span() -> None:
    fleet = FleetSnapshot((node("a1", "d1"), node("a2", "d1", free=2), node("b1", "d2"), node("b2", "d2", free=0)))
    [req] = place(fleet, [request("w", 8)])
    assert isinstance(req, Unplaced)  # d1 has 6 free, d2 has 4
    [spread] = place(fleet, [request("w", 8, NvlinkPolicy.NONE)])
    assert len(gpus_of(spread)) == 8
    [pref] = place(fleet, [request("w", 8, NvlinkPolicy.PREFERRED)])
    assert len(gpus_of(pref)) == 8


def test_multi_node_gang_uses_whole_nodes_one_rank_each() -> None:
    fleet = FleetSnapshot(tuple(node(f"n{i}") for i in range(6)))
    [d] = place(fleet, [request("w", 16)])
    assert isinstance(d, Placement)
    assert len(d.ranks) == 4 and all(len(r.gpu_ids) == 4 for r in d.ranks)
    assert len({r.node_id for r in d.ranks}) == 4


def test_best_fit_domain_keeps_the_emptier_domain_whole() -> None:
    fleet = FleetSnapshot((node("a1", "d1"), node("a2", "d1"), node("b1", "d2"), node("b2", "d2", free=0)))
    [d] = place(fleet, [request("w", 4)])
    assert isinstance(d, Placement) and d.ranks[0].node_id == "b1"


def test_cordoned_unreachable_unhealthy_and_model_are_filtered_with_reasons() -> None:
    fleet = FleetSnapshot(
        (
            node("a", unschedulable="cordoned"),
            node("b", unschedulable="unreachable"),
            node("c", unhealthy=3),
            node("d", free=0),
            node("h", model="NVIDIA H100"),
        )
    )
    [d] = place(fleet, [request("w", 2)])
    assert isinstance(d, Unplaced)
    assert (
        d.reason == "waiting for 2 NVIDIA GB300 GPUs: 1/16 free (4 allocated, 4 cordoned, 4 unreachable, 3 unhealthy)"
    )
    [one] = place(fleet, [request("w", 1)])
    assert gpus_of(one) == ["c-g3"]
    [h] = place(fleet, [request("w", 4, model="NVIDIA H100")])
    assert isinstance(h, Placement)
    [nope] = place(fleet, [request("w", 1, model="NVIDIA B200")])
    assert isinstance(nope, Unplaced) and "no NVIDIA B200" in nope.reason


def test_reserve_within_a_pass_prevents_double_booking() -> None:
    fleet = FleetSnapshot((node("a"), node("b")))
    decisions = place(fleet, [request(f"w{i}", 4, at=i) for i in range(3)])
    placed = [d for d in decisions if isinstance(d, Placement)]
    assert len(placed) == 2 and isinstance(decisions[2], Unplaced)
    all_gpus = [g for d in placed for g in gpus_of(d)]
    assert len(all_gpus) == len(set(all_gpus)) == 8


def test_queue_order_is_priority_then_age() -> None:
    reqs = [
        request("spot-old", 1, at=0, priority=PriorityClass.SPOT),
        request("od-new", 1, at=5),
        request("res", 1, at=9, priority=PriorityClass.RESERVED),
        request("od-old", 1, at=1),
    ]
    assert [r.workload_id for r in queue_order(reqs)] == ["res", "od-old", "od-new", "spot-old"]
    # A tenant with a reservation: its reserved work goes first.
    contract = {"": TenantPolicy("", reserved_gpus=1)}
    fleet = FleetSnapshot((node("a", free=1),), tenants=contract)
    decisions = {d.workload_id: d for d in place(fleet, reqs)}
    assert isinstance(decisions["res"], Placement)
    assert all(isinstance(decisions[w], Unplaced) for w in ("od-old", "od-new", "spot-old"))


def test_asking_for_class_reserved_without_a_reservation_jumps_no_on_demand_work() -> None:
    """Any tenant may submit with priority "reserved"; beyond its reservation (here, none) the
    request competes with on_demand work, so it does not take the one free GPU from older
    on_demand work (the old core placed it first: a free ride over every on_demand tenant)."""
    reqs = [request("res", 1, at=9, priority=PriorityClass.RESERVED), request("od-old", 1, at=1)]
    for tenants in ({}, {"": TenantPolicy("", reserved_gpus=0)}):
        decisions = {d.workload_id: d for d in place(FleetSnapshot((node("a", free=1),), tenants=tenants), reqs)}
        assert isinstance(decisions["od-old"], Placement) and isinstance(decisions["res"], Unplaced)


def test_whole_rack_request() -> None:
    fleet = FleetSnapshot(tuple(node(f"t{i:02d}") for i in range(18)))
    [d] = place(fleet, [request("w", 72)])
    assert isinstance(d, Placement) and len(d.ranks) == 18 and len(gpus_of(d)) == 72
    [too_big] = place(fleet, [request("w", 73)])
    assert isinstance(too_big, Unplaced) and "the fleet has 72" in too_big.reason


def test_placement_epochs_fence_by_leader_and_differ_by_pass() -> None:
    from controlplane.domain.epoch import PlacementEpoch

    e = PlacementEpoch.of
    assert e(2, 1).value < e(2, 2).value < e(3, 1).value
    assert e(3, 1).value > e(2, 10**6).value
    assert PlacementEpoch.from_value(e(7, 9).value) == e(7, 9)


def test_a_domain_draining_its_nvlink_peers_takes_no_nvlink_gangs() -> None:
    draining = NodeView(node_id="a", domain="d1", unschedulable="", gpus=node("a").gpus, nvlink_draining=True)
    fleet = FleetSnapshot((draining, node("b", "d1")))
    [gang] = place(fleet, [request("w", 8)])
    assert isinstance(gang, Unplaced) and "draining their peers" in gang.reason
    [single] = place(fleet, [request("w", 1)])
    assert isinstance(single, Placement)  # one GPU needs no NVLink peers
    [anywhere] = place(fleet, [request("w", 8, NvlinkPolicy.NONE)])
    assert isinstance(anywhere, Placement)
